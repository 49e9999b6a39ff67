"""A small byte-level BPE tokenizer for the demo model, trained on the demo corpus.

The released 200K vocabulary would cost 50 M parameters at width 256, so the demo model gets its own
few-thousand-token vocabulary. The control tokens keep their released *strings* (speechkit looks them
up by string, see :mod:`speechkit.text.tokenizer`) but sit at small ids chosen by the model config.
``<sep>`` (the chain-of-thought separator) stays ordinary text, as in the released tokenizer, so a
decode that skips special tokens keeps it; the task prompts are in the training text, so each
prompt encodes to a few tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from speechkit.errors import ConfigError
from speechkit.text.prompts import SPEECH_LANGUAGES, Language, Task, task_instruction
from speechkit.text.tokenizer import (
    ASSISTANT_TOKEN,
    AUDIO_TOKEN,
    END_TOKEN,
    ENDOFTEXT_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
)

# The demo layout: the tokens of the speech prompts at the first ids. <|endoftext10|> is kept because
# the released vocabulary has it next to the audio token (the vision placeholder).
DEMO_SPECIAL_IDS: dict[str, int] = {
    ENDOFTEXT_TOKEN: 0,
    "<|endoftext10|>": 1,
    AUDIO_TOKEN: 2,
    END_TOKEN: 3,
    USER_TOKEN: 4,
    ASSISTANT_TOKEN: 5,
    SYSTEM_TOKEN: 6,
}
_REQUIRED = (ENDOFTEXT_TOKEN, AUDIO_TOKEN, END_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, SYSTEM_TOKEN)


@dataclass(frozen=True)
class TokenizerConfig:
    """The ``tokenizer`` section of the recipe config: total vocabulary size and the special-token ids."""

    vocab_size: int = 6000
    special_ids: dict[str, int] = field(default_factory=lambda: dict(DEMO_SPECIAL_IDS))

    def __post_init__(self) -> None:
        _check(self.special_ids, self.vocab_size)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TokenizerConfig:
        """Build from a parsed YAML mapping; unknown keys are ConfigErrors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"tokenizer: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**raw)


def prompt_texts() -> list[str]:
    """The task instructions of every speech language, so the tokenizer learns them as whole words."""
    out = [task_instruction(Task.ASR)]
    for code, name in SPEECH_LANGUAGES.items():
        language = Language(code, name, True)
        out += [task_instruction(Task.AST, language), task_instruction(Task.AST_COT, language)]
    return out


def train_tokenizer(
    texts: Iterable[str], directory: str | Path, vocab_size: int = 6000,
    special_ids: Mapping[str, int] = DEMO_SPECIAL_IDS,
) -> Path:  # fmt: skip
    """Train on ``texts`` and write ``tokenizer.json`` and ``generation_config.json`` into ``directory``.

    ``vocab_size`` counts everything: 256 byte symbols, merges and the special tokens, whose ids
    (``special_ids``: string -> id, each below ``vocab_size``) are placed exactly; ordinary tokens fill
    the other ids in training order. generation_config.json stops at ``<|end|>`` and ``<|endoftext|>``.
    """
    _check(special_ids, vocab_size)
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(special_ids), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    backend.train_from_iterator(_with_prompts(texts), trainer)
    spec = json.loads(backend.to_str())
    spec["model"]["vocab"] = _place(spec["model"]["vocab"], special_ids)
    # added tokens read from JSON keep their id only if the model vocabulary holds them at that id
    spec["added_tokens"] = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in sorted(special_ids.items(), key=lambda item: item[1])
    ]  # fmt: skip
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
    eos = [special_ids[END_TOKEN], special_ids[ENDOFTEXT_TOKEN]]
    generation = {"bos_token_id": eos[1], "eos_token_id": eos, "pad_token_id": eos[1]}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", "utf-8")
    return directory


def _with_prompts(texts: Iterable[str]) -> Iterable[str]:
    yield from prompt_texts() * 50  # frequent enough that every prompt word becomes one token
    yield from texts


def _check(special_ids: Mapping[str, int], vocab_size: int) -> None:
    missing = [s for s in _REQUIRED if s not in special_ids]
    if missing:
        raise ConfigError(f"tokenizer special ids: missing {missing} (speechkit's prompts need them)")
    ids = sorted(special_ids.values())
    if len(set(ids)) != len(ids) or ids[0] < 0 or ids[-1] >= vocab_size:
        raise ConfigError(f"tokenizer special ids must be distinct and in [0, {vocab_size}), got {dict(special_ids)}")
    if vocab_size < 256 + len(ids) + 1:
        raise ConfigError(f"tokenizer vocab_size {vocab_size} leaves no room for merges (256 bytes + specials)")


def _place(vocab: dict[str, int], special_ids: Mapping[str, int]) -> dict[str, int]:
    ordinary = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1]) if t not in special_ids]
    taken = set(special_ids.values())
    free = (i for i in range(len(ordinary) + len(special_ids)) if i not in taken)
    placed = {token: next(free) for token in ordinary}
    placed.update(special_ids)
    return placed
