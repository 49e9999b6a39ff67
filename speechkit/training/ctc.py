"""A training-only CTC output on the encoder: a direct, monotonic signal for an encoder trained from scratch.

The released model has no CTC layer, so the head lives in the training state (saved for exact resume)
and never in the exported checkpoint.

Why a separate head: scored through the projector and the tied token embeddings instead (both start at
std 0.02), the logits start near zero and CTC stays on the all-blank plateau; a plain linear layer on the
encoder output fits 8 fixed utterances word for word in 150 CPU steps (recipes/synthetic_demo/RESULTS.md).

What it emits (:class:`CtcUnits`): the tokenizer's ids of the transcript, the characters of what was
read (kana for Japanese, pinyin for Mandarin, else the transcript), or the characters of what was said
(espeak-ng's IPA, the manifests' ``phonemes``). On the demo's synthetic speech a 4-block
encoder left the CTC plateau after ~400 small CPU steps on characters and not within 1,500 on the 6,000
BPE ids. At 80 ms per encoder token a sentence read at 220 words a minute has more characters than
tokens, so the head emits ``upsample`` labels per token.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from speechkit.model.encoder import EncoderOutput
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.ctc_loss import ctc_mean_loss

STATE_PREFIX = "ctc_head."  # names of the head's parameters in the training state and optimizer


def reading_chars(text: str) -> str:
    """The CTC view of a reading: lower-cased letters, marks and digits (pinyin tones), single spaces."""
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in unicodedata.normalize("NFC", text))
    return " ".join(kept.lower().split())


@dataclass(frozen=True)
class CtcUnits:
    """The CTC label set: ``tokens`` (a tokenizer's ids of the transcript, blank = its ``<|endoftext|>``),
    ``chars`` or ``phonemes`` (``chars[i]`` is label i + 1 of the :func:`reading_chars` of the row's reading,
    or of its phonemes; blank = 0)."""

    kind: str
    size: int
    blank: int
    chars: tuple[str, ...] = ()
    tokenizer: Tokenizer | None = None

    @classmethod
    def tokens(cls, tokenizer: Tokenizer, vocab_size: int) -> CtcUnits:
        return cls("tokens", vocab_size, tokenizer.special.endoftext, tokenizer=tokenizer)

    @classmethod
    def characters(cls, readings: Iterable[str], kind: str = "chars") -> CtcUnits:
        """The characters of ``readings`` (all training readings, or phonemes for ``kind="phonemes"``: a
        fixed corpus gives a fixed label set)."""
        chars = tuple(sorted({c for text in readings for c in reading_chars(text)}))
        return cls(kind, len(chars) + 1, 0, chars)

    def reading_of(self, row: Any) -> str:
        """What this head hears in a manifest row (a :class:`~speechkit.training.batches.Row`): its
        phonemes for ``phonemes`` units, else its reading."""
        return row.phonemes if self.kind == "phonemes" else row.reading

    def target_text(self, text: str, reading: str) -> str:
        """What the head should emit for an utterance with transcript ``text`` read as ``reading``."""
        return text if self.kind == "tokens" else reading_chars(reading)

    def encode(self, text: str, reading: str) -> list[int]:
        if self.kind == "tokens":
            return self.tokenizer.encode(text)
        return [self._index[c] for c in reading_chars(reading) if c in self._index]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}

    def decode(self, labels: list[int]) -> str:
        if self.kind == "tokens":
            return self.tokenizer.decode(labels)
        return "".join(self.chars[i - 1] for i in labels)


class CtcHead(nn.Module):
    """Linear map from encoder tokens (B, T', encoder_dim) to ``upsample`` x T' frames of ``units.size``
    logits, initialised from ``seed``."""

    def __init__(self, encoder_dim: int, units: CtcUnits, upsample: int, seed: int) -> None:
        super().__init__()
        self.units, self.upsample = units, upsample
        self.proj = nn.Linear(encoder_dim, upsample * units.size)
        gen = torch.Generator().manual_seed(seed)
        bound = 1 / encoder_dim**0.5
        with torch.no_grad():  # nn.Linear's own uniform init, drawn from a private generator
            self.proj.weight.copy_(torch.rand(self.proj.weight.shape, generator=gen) * 2 * bound - bound)
            self.proj.bias.zero_()

    def logits(self, encoded: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, upsample * T', size) logits and (B,) valid label frames."""
        batch, tokens, _ = encoded.hidden.shape
        out = self.proj(encoded.hidden).view(batch, tokens * self.upsample, self.units.size)
        return out, encoded.lengths * self.upsample

    def loss(self, encoded: EncoderOutput, asr_rows: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Mean CTC (per target label, as ``F.ctc_loss``'s ``mean``) of the ASR rows (``asr_rows`` (B,) bool).

        ``targets``: the ASR rows' labels concatenated; ``target_lengths`` (R,). ``asr_rows``, ``target_lengths``
        and the encoder's token lengths are read on the host (on a GPU, copies of them there would have to be
        read back: a wait for the device). Rows too short for their labels give zero instead of inf.
        """
        rows = asr_rows.cpu().nonzero().flatten()
        hidden, lengths = encoded.hidden, encoded.lengths.cpu()
        if len(rows) < len(asr_rows):
            hidden, lengths = hidden[rows.to(hidden.device, non_blocking=True)], lengths[rows]
        logits, frames = self.logits(EncoderOutput(hidden.float(), lengths))
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (frames, R, size)
        return ctc_mean_loss(log_probs, targets, frames, target_lengths.cpu(), self.units.blank)

    def greedy(self, encoded: EncoderOutput) -> list[list[int]]:
        """Best-path labels (repeats merged, blanks dropped) of each item's valid frames."""
        logits, lengths = self.logits(encoded)
        blank = self.units.blank
        return [[t for j, t in enumerate(path[:n]) if t != blank and (j == 0 or t != path[j - 1])]
                for path, n in zip(logits.argmax(-1).tolist(), lengths.tolist(), strict=True)]  # fmt: skip

    def trainable(self) -> dict[str, nn.Parameter]:
        """The head's parameters under their training-state names."""
        return {STATE_PREFIX + name: p for name, p in self.named_parameters()}
