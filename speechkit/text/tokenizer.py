"""The Phi-4-multimodal tokenizer, read from a checkpoint's ``tokenizer.json`` with ``tokenizers``.

Special ids are looked up by their strings, never assumed, so a checkpoint with a different
layout fails here with the token's name instead of producing wrong prompts. Stop ids come from
the checkpoint's ``generation_config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from speechkit.errors import CheckpointError

TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"

# Strings of the official tokenizer (reference F.1); the native port renames some of them, the
# official checkpoint does not.
AUDIO_TOKEN = "<|endoftext11|>"  # 200011 in the released model
ENDOFTEXT_TOKEN = "<|endoftext|>"  # 199999: bos = eos = pad
END_TOKEN = "<|end|>"  # 200020: end of turn
USER_TOKEN = "<|user|>"  # 200021
ASSISTANT_TOKEN = "<|assistant|>"  # 200019
SYSTEM_TOKEN = "<|system|>"  # 200022


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the control tokens the speech prompts use."""

    audio: int
    endoftext: int
    end: int
    user: int
    assistant: int
    system: int


class Tokenizer:
    """Encode/decode text; no BOS is ever added (the chat format has none)."""

    def __init__(self, backend: HFTokenizer, stop_ids: tuple[int, ...], source: Path) -> None:
        self._backend = backend
        self.source = source
        self.stop_ids = stop_ids  # generation ends at any of these (eos_token_id of generation_config.json)
        self.special = SpecialTokens(
            audio=self.token_id(AUDIO_TOKEN),
            endoftext=self.token_id(ENDOFTEXT_TOKEN),
            end=self.token_id(END_TOKEN),
            user=self.token_id(USER_TOKEN),
            assistant=self.token_id(ASSISTANT_TOKEN),
            system=self.token_id(SYSTEM_TOKEN),
        )

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        """Load ``<directory>/tokenizer.json`` and the stop ids of ``<directory>/generation_config.json``."""
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: tokenizer.json not found (is --model a checkpoint directory?)")
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise CheckpointError(f"{path}: not a valid tokenizers file ({err})") from None
        return cls(backend, _read_stop_ids(directory / GENERATION_CONFIG_FILE), path)

    def token_id(self, token: str) -> int:
        """Id of a single (special) token string; CheckpointError naming it and the file if absent."""
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"{self.source}: required special token {token!r} is not in the vocabulary")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings in it (``<|end|>``...) become their ids."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens (chat markers, audio placeholders, eos) left out."""
        return self._backend.decode(list(ids), skip_special_tokens=True)


def _read_stop_ids(path: Path) -> tuple[int, ...]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: generation_config.json not found (it lists the stop ids)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    eos = config.get("eos_token_id")
    ids = [eos] if isinstance(eos, int) else eos
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise CheckpointError(f"{path}: eos_token_id must be an int or a non-empty list of ints, got {eos!r}")
    return tuple(ids)
