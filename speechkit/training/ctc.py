"""A training-only CTC output on the encoder: a direct, monotonic signal for an encoder trained from scratch.

The released model has no CTC layer, so the head lives in the training state (saved for exact resume)
and never in the exported checkpoint. Its blank is the batch's pad id (``<|endoftext|>``, never part of
a transcript).

Why a separate head: scored through the projector and the tied token embeddings instead (both start at
std 0.02), the logits start near zero and CTC stays on the all-blank plateau; a plain linear layer on the
encoder output fits 8 fixed utterances word for word in 150 CPU steps (recipes/synthetic_demo/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechkit.model.encoder import EncoderOutput
from speechkit.training.batches import IGNORE, Batch

STATE_PREFIX = "ctc_head."  # names of the head's parameters in the training state and optimizer


class CtcHead(nn.Module):
    """Linear map from encoder tokens (B, T', encoder_dim) to (B, T', vocab) logits, initialised from ``seed``."""

    def __init__(self, encoder_dim: int, vocab_size: int, seed: int) -> None:
        super().__init__()
        self.proj = nn.Linear(encoder_dim, vocab_size)
        gen = torch.Generator().manual_seed(seed)
        bound = 1 / encoder_dim**0.5
        with torch.no_grad():  # nn.Linear's own uniform init, drawn from a private generator
            self.proj.weight.copy_(torch.rand(self.proj.weight.shape, generator=gen) * 2 * bound - bound)
            self.proj.bias.zero_()

    def loss(self, encoded: EncoderOutput, batch: Batch) -> torch.Tensor:
        """Mean CTC (per target token, as ``F.ctc_loss``'s ``mean``) of the transcripts of ASR rows.

        The transcript is the answer tokens without the closing ``<|end|>``. Rows too short for their
        transcript give zero (``zero_infinity``) instead of inf.
        """
        rows = batch.asr_rows.nonzero().flatten()
        logits = self.proj(encoded.hidden[rows].float())  # (R, T', vocab)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (T', R, vocab)
        targets = [batch.labels[r][batch.labels[r] != IGNORE][:-1] for r in rows.tolist()]
        target_lengths = torch.tensor([len(t) for t in targets], device=logits.device)
        lengths = encoded.lengths.to(logits.device)[rows]
        return F.ctc_loss(log_probs, torch.cat(targets), lengths, target_lengths, blank=batch.pad_id,
                          reduction="mean", zero_infinity=True)  # fmt: skip

    def greedy(self, encoded: EncoderOutput, blank: int) -> list[list[int]]:
        """Best-path transcripts (repeats merged, blanks dropped) of each item's valid encoder tokens."""
        best = self.proj(encoded.hidden).argmax(-1).tolist()
        return [[t for j, t in enumerate(path[:n]) if t != blank and (j == 0 or t != path[j - 1])]
                for path, n in zip(best, encoded.lengths.tolist(), strict=True)]  # fmt: skip

    def trainable(self) -> dict[str, nn.Parameter]:
        """The head's parameters under their training-state names."""
        return {STATE_PREFIX + name: p for name, p in self.named_parameters()}
