"""A tiny byte-level BPE ``tokenizer.json`` with the special tokens at the RELEASED ids.

The vocabulary is 256 byte symbols plus a few hundred merges learnt from a short English/French/
German text, then the control tokens of the Phi-4-multimodal tokenizer at their real ids
(199999, 200010, 200011, 200018..200028), so prompts built for the released model tokenize to the
same special ids here and test models (vocab_size 200064) have an embedding row for each.
``tokenizers`` accepts the id gaps: unused ids simply decode to nothing.

``<sep>`` (the AST chain-of-thought separator) is ordinary text here: the reference does not list
it among the released special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Released ids (reference F.1). 199999/200010/200011/200020 are read from Microsoft files;
# 200019/200021/200022 from two third-party probes; the remaining tool/control strings of the
# 200018..200028 range follow the Phi-4-mini tokenizer as we remember it -- UNCONFIRMED.
SPECIAL_TOKENS: dict[int, str] = {
    199999: "<|endoftext|>",
    200010: "<|endoftext10|>",
    200011: "<|endoftext11|>",
    200018: "<|endofprompt|>",
    200019: "<|assistant|>",
    200020: "<|end|>",
    200021: "<|user|>",
    200022: "<|system|>",
    200023: "<|tool|>",
    200024: "<|/tool|>",
    200025: "<|tool_call|>",
    200026: "<|/tool_call|>",
    200027: "<|tool_response|>",
    200028: "<|tag|>",
}

GENERATION_CONFIG = {"bos_token_id": 199999, "eos_token_id": [200020, 199999], "pad_token_id": 199999}

_TRAINING_TEXT = [
    "Transcribe the audio clip into text. Translate the audio to French. Translate the audio to German.",
    "Transcribe the audio to text, and then translate the audio to English. Use <sep> as a separator "
    "between the original transcript and the translation. Summarize the audio.",
    "The quick brown fox jumps over the lazy dog while the weather is nice and the children are "
    "playing in the garden near the river; they will come home for dinner at seven o'clock.",
    "Bonjour, je voudrais un café et un croissant, s'il vous plaît. Le temps est très beau "
    "aujourd'hui et nous allons nous promener au bord de la rivière avec les enfants.",
    "Guten Morgen, ich möchte einen Kaffee und ein Brötchen, bitte. Das Wetter ist heute sehr schön "
    "und wir gehen mit den Kindern am Fluss spazieren, bevor es Abendessen gibt.",
]


def _train_bpe() -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer)
    return json.loads(tok.to_str())


def write_tiny_tokenizer(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``generation_config.json`` into ``directory``; return it.

    generation_config.json carries the released bos 199999, eos [200020, 199999], pad 199999.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = _train_bpe()
    # Added tokens loaded from JSON get fresh consecutive ids unless the model vocabulary already
    # holds them, so each special string goes into the BPE vocab at its released id as well.
    for token_id, content in SPECIAL_TOKENS.items():
        spec["model"]["vocab"][content] = token_id
    spec["added_tokens"] = [
        {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for token_id, content in SPECIAL_TOKENS.items()
    ]
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (directory / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    return directory
