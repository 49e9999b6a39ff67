"""The Conformer audio encoder: normalise, subsample 8x, 24 blocks in <= 500-token windows.

Batch semantics: the single-utterance path is canonical, and each item of a padded batch gets
exactly its single-utterance result. The official batched code does not guarantee that; we do
three things it does not (reference B.5, H.4):

1. inputs beyond an item's valid length are zeroed before every strided conv stage
   (``ConvSubsampling``), because the single path sees conv zero padding there;
2. an item longer than one window is padded with zero tokens up to its last window boundary and
   those tokens stay UNmasked, because the single path attends to that zero padding;
3. every other position beyond the item is masked with -inf on the keys; a window with no valid
   key at all (entirely beyond a short item) attends to everything instead of producing NaN, and
   its outputs are discarded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from speechkit.model.config import ENCODER_WINDOW_TOKENS, EncoderConfig
from speechkit.model.conformer import ConformerBlock
from speechkit.model.subsampling import ConvSubsampling, zero_beyond


@dataclass(frozen=True)
class EncoderOutput:
    """Encoder (or projected) tokens.

    Attributes:
        hidden: (B, L, D) tokens, one per 80 ms; positions beyond ``lengths`` are padding.
        lengths: (B,) int64 valid tokens per item.
    """

    hidden: torch.Tensor
    lengths: torch.Tensor


class GlobalNorm(nn.Module):
    """(x - mean) * invstd with the per-channel statistics stored in the checkpoint."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("global_mean", torch.zeros(size))
        self.register_buffer("global_invstd", torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.global_mean) * self.global_invstd


class RelativeBias(nn.Module):
    """T5-style relative position bias without buckets: bias[h, i, j] = E[clamp(j - i) + max_distance, h]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.max_distance = config.bias_max_distance
        self.bias_values = nn.Embedding(2 * config.bias_max_distance, config.attention_heads)

    def forward(self, length: int) -> torch.Tensor:
        """Returns (1, heads, length, length)."""
        pos = torch.arange(length, device=self.bias_values.weight.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance - 1)
        # contiguous: SDPA's fused kernels need a unit stride along keys; the permuted view (and the batch
        # bias summed from it, which keeps its layout) sent every encoder attention call to the fp32 math
        # kernel on a GPU (H200, torch 2.11: 64 x 30 s clips, 0.9 ms a call fused)
        return self.bias_values(rel + self.max_distance).permute(2, 0, 1).unsqueeze(0).contiguous()


# elements: SDPA's mem-efficient kernel takes a bias in place only when every stride but the last is a multiple
# of 16 bytes (8 bf16 values; 16 covers fp32 too), else it pads a copy of it on each call
BIAS_ALIGNMENT = 16


def aligned_rows(bias: torch.Tensor) -> torch.Tensor:
    """``bias`` (..., L, L) as a view into storage whose rows are padded to a multiple of
    :data:`BIAS_ALIGNMENT` elements: one copy per encoder pass instead of one per block (a 30 s window has 375
    keys; at batch 64 on an H200 these copies and the conv module's padded inputs took ~7 ms of the tower's
    151 ms)."""
    length = bias.shape[-1]
    padded = -(-length // BIAS_ALIGNMENT) * BIAS_ALIGNMENT
    if padded == length:
        return bias
    return nn.functional.pad(bias, (0, padded - length))[..., :length]


class AudioEncoder(nn.Module):
    """Log-mel (B, T, 80) -> (B, ceil(T/8), attention_dim)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder_embedding = GlobalNorm(config.input_size)
        self.embed = ConvSubsampling(config)
        self.relative_attention_bias_layer = RelativeBias(config)
        self.encoders = nn.ModuleList(ConformerBlock(config) for _ in range(config.num_blocks))

    def token_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Valid encoder tokens for (B,) valid feature frames: ceil(frames / time_reduction)."""
        return torch.div(
            frames + self.config.time_reduction - 1, self.config.time_reduction, rounding_mode="floor"
        )

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None, *, lengths_on_host: bool = True
    ) -> EncoderOutput:
        """Encode a batch of log-mel features.

        Args:
            features: (B, T, n_mels) log-mel, any float dtype; cast to the encoder's dtype first
                (as the official model does) so normalisation runs in that dtype.
            lengths: (B,) valid frames per item; None means every item fills T (no masking).
            lengths_on_host: return the token lengths on the CPU (a device synchronisation); False keeps
                them where they were computed, as a CUDA-graph capture needs.
        """
        dtype = self.encoder_embedding.global_mean.dtype
        x = self.encoder_embedding(features.to(dtype))
        h, tok_lengths = self.embed(x, lengths)
        batch, total, dim = h.shape
        window = ENCODER_WINDOW_TOKENS if total > ENCODER_WINDOW_TOKENS else total
        n_windows = math.ceil(total / window)
        padded = n_windows * window
        # zero tokens pad the last window; on the single path they are attended (reference B.5)
        h = nn.functional.pad(h, (0, 0, 0, padded - total))
        bias = self.relative_attention_bias_layer(window).to(h.dtype)
        if tok_lengths is not None:
            h = zero_beyond(h, tok_lengths, time_dim=1)
            bias = bias + self._key_mask(tok_lengths, n_windows, window, h.dtype)
        bias = aligned_rows(bias)
        h = h.reshape(batch * n_windows, window, dim)
        for block in self.encoders:
            h = block(h, bias)
        h = h.reshape(batch, padded, dim)[:, :total]
        if tok_lengths is None:
            tok_lengths = torch.full((batch,), total, dtype=torch.int64)
        return EncoderOutput(h, tok_lengths.cpu() if lengths_on_host else tok_lengths)

    def _key_mask(
        self, tok_lengths: torch.Tensor, n_windows: int, window: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """Additive key mask (B * n_windows, 1, 1, window): 0 where attended, -inf elsewhere."""
        tok_lengths = tok_lengths.to(self.relative_attention_bias_layer.bias_values.weight.device)
        # an item longer than one window attends its own zero padding up to its last window end
        long = tok_lengths > ENCODER_WINDOW_TOKENS
        limit = torch.where(
            long, torch.div(tok_lengths + window - 1, window, rounding_mode="floor") * window, tok_lengths
        )
        pos = torch.arange(n_windows * window, device=limit.device)
        valid = (pos[None, :] < limit[:, None]).view(-1, window)
        # a window entirely beyond its item: attend everywhere (finite), result is discarded
        valid = valid | ~valid.any(dim=-1, keepdim=True)
        mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))
        return mask[:, None, None, :]


def pad_to_bucket(features: torch.Tensor, lengths: torch.Tensor, rows_step: int,
                  frames_step: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, T, n_mels) features and (B,) valid frames padded to a fixed-shape bucket (for CUDA graphs): zero
    frames up to a multiple of ``frames_step``, full-length zero rows up to a multiple of ``rows_step``.

    The encoder masks every frame past a row's length, so a real row's tokens come out as for the batch
    alone, as long as the padded batch still fits one attention window (:data:`ENCODER_WINDOW_TOKENS`);
    beyond it the window split, and with it the output, would change.
    """
    rows, frames, mels = features.shape
    key = (-(-rows // rows_step) * rows_step, -(-frames // frames_step) * frames_step)
    padded = features.new_zeros(*key, mels)
    padded[:rows, :frames] = features
    padded_lengths = torch.full((key[0],), key[1], dtype=torch.int64, device=features.device)
    padded_lengths[:rows] = lengths.to(features.device, non_blocking=True)
    return padded, padded_lengths
