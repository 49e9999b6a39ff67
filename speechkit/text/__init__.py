"""Text side of the speech model: the checkpoint's tokenizer and the speech prompt format."""

from speechkit.text.prompts import (
    CotSplit,
    Language,
    PromptSpec,
    Task,
    encode_prompt,
    resolve_language,
    split_cot,
)
from speechkit.text.tokenizer import SpecialTokens, Tokenizer

__all__ = [
    "CotSplit",
    "Language",
    "PromptSpec",
    "SpecialTokens",
    "Task",
    "Tokenizer",
    "encode_prompt",
    "resolve_language",
    "split_cot",
]
