"""LongRoPE partial rotary embedding of the Phi-4-mini decoder (reference section E).

Two frequency regimes: ``short`` factors while the total sequence (KV cache + new tokens) fits in
``original_max_position_embeddings``, ``long`` factors beyond. Both regimes scale cos/sin by
``RopeConfig.attention_scale``. The regime applies to the whole forward pass, so keys cached under
the short regime become stale once a sequence grows past the threshold: the caller detects the
crossing with :meth:`LongRope.regime_for` and recomputes the prefix (what the official code does).

No buffers: the inverse frequencies are recomputed per call from the frozen config (a few dozen
floats), so a decoder built on the meta device needs nothing re-initialised after loading.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from speechkit.model.config import RopeConfig

Regime = Literal["short", "long"]


class RopeTables(NamedTuple):
    """cos and sin, each (B, L, rotary_dim), already multiplied by the attention scale.

    A NamedTuple rather than a dataclass so that ``torch.compile`` traces it without guards.
    """

    cos: Tensor
    sin: Tensor


class LongRope:
    """Cos/sin tables for partial rotary embedding with LongRoPE scaling."""

    def __init__(self, config: RopeConfig) -> None:
        self.config = config
        # per (regime, device): computed on first use, so a CUDA-graph capture (which cannot copy
        # from pageable host memory) finds them ready after its warm-up steps
        self._inv_freq: dict[tuple[Regime, torch.device], Tensor] = {}

    def regime_for(self, total_len: int) -> Regime:
        """Regime for a forward pass whose KV length (cached + new tokens, padding included) is ``total_len``.

        Official eager/SDPA rule: long factors once the KV length exceeds
        ``original_max_position_embeddings``; a config without long factors is always ``short``.
        """
        if self.config.long_factor and total_len > self.config.original_max_position_embeddings:
            return "long"
        return "short"

    def inv_freq(self, regime: Regime, device: torch.device | None = None) -> Tensor:
        """Inverse frequencies (rotary_dim / 2,) in fp32: 1 / (factor_i * theta ** (2i / rotary_dim))."""
        factors = self.config.long_factor if regime == "long" else self.config.short_factor
        dim = self.config.rotary_dim
        # Same op order as the reference (integer arange cast to fp32, scalar ** tensor) so that
        # the tables agree bit for bit, not just to rounding.
        exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
        base = self.config.theta**exponent
        if factors:
            base = torch.tensor(factors, dtype=torch.float32, device=device) * base
        return 1.0 / base

    def tables(self, position_ids: Tensor, regime: Regime, dtype: torch.dtype) -> RopeTables:
        """cos/sin (B, L, rotary_dim) in ``dtype`` for integer ``position_ids`` (B, L).

        Angles are computed in fp32 whatever ``dtype`` is (bf16 positions above 256 are not exact).
        """
        key = (regime, position_ids.device)
        if key not in self._inv_freq:
            self._inv_freq[key] = self.inv_freq(regime, position_ids.device)
        inv_freq = self._inv_freq[key]
        # (B, L, 1) * (rotary_dim/2,): one multiply per entry, identical to the reference's K=1 matmul
        freqs = position_ids.float()[..., None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, L, rotary_dim), rotate-half layout
        scale = self.config.attention_scale
        return RopeTables((angles.cos() * scale).to(dtype), (angles.sin() * scale).to(dtype))


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension, split in two halves."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, tables: RopeTables) -> Tensor:
    """Rotate the first rotary_dim dims of each head of ``x`` (B, H, L, head_dim); the rest pass through."""
    cos = tables.cos[:, None]  # (B, 1, L, rotary_dim): broadcast over heads
    sin = tables.sin[:, None]
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
