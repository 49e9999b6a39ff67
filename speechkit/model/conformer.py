"""One Conformer block of the Phi-4-multimodal audio encoder (reference B.6-B.9).

Parameter names follow the transformers port (``gate_up_proj``, ``q_proj``...), so our state
dict and the port's are interchangeable; the official names are mapped in ``convert_official``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechkit.model.attention import sdpa
from speechkit.model.config import EncoderConfig


class FeedForward(nn.Module):
    """LN -> Linear(d, 2u) -> value * SiLU(gate) -> Linear(u, d); the VALUE half comes first."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.attention_dim, eps=config.layer_norm_eps)
        self.gate_up_proj = nn.Linear(config.attention_dim, 2 * config.linear_units)
        self.down_proj = nn.Linear(config.linear_units, config.attention_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.gate_up_proj(self.layer_norm(x)).chunk(2, dim=-1)
        return self.down_proj(value * F.silu(gate))


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive bias (relative positions + key padding mask)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.attention_dim
        self.num_heads = config.attention_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: (N, L, d); bias: (N or 1, heads, L, L) added to the scaled logits."""
        n, length, d = x.shape
        shape = (n, length, self.num_heads, d // self.num_heads)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = sdpa(q, k, v, attn_mask=bias.to(q.dtype))
        return self.o_proj(out.transpose(1, 2).reshape(n, length, d))


class GluPointwiseConv(nn.Module):
    """Pointwise conv to 2d channels, then (value + b1) * SiLU(gate + b2)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.attention_dim
        self.ext_pw_conv_1d = nn.Conv1d(d, 2 * d, kernel_size=1)
        self.b1 = nn.Parameter(torch.zeros(1, d, 1))
        self.b2 = nn.Parameter(torch.zeros(1, d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, d, L) -> (N, d, L)."""
        value, gate = self.ext_pw_conv_1d(x).chunk(2, dim=1)
        return (value + self.b1) * F.silu(gate + self.b2)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d, k = config.attention_dim, config.kernel_size
        # padded k-1 on both sides; the caller drops the last k-1 outputs, making it causal
        self.dw_conv = nn.Conv1d(d, d, kernel_size=k, padding=k - 1, groups=d)
        self.pw_conv = nn.Conv1d(d, d, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_conv(self.dw_conv(x))


class ConvModule(nn.Module):
    """LN -> GLU pointwise -> causal depthwise + pointwise -> SiLU -> pointwise (no batch norm)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.trim = config.kernel_size - 1
        self.layer_norm = nn.LayerNorm(config.attention_dim, eps=config.layer_norm_eps)
        self.glu = GluPointwiseConv(config)
        self.dw_sep_conv_1d = DepthwiseSeparableConv(config)
        self.ext_pw_conv_1d = nn.Conv1d(config.attention_dim, config.attention_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.glu(self.layer_norm(x).transpose(1, 2))  # (N, d, L)
        h = self.dw_sep_conv_1d(h)
        if self.trim:
            h = h[:, :, : -self.trim]  # output t sees inputs t-k+1 .. t
        return self.ext_pw_conv_1d(F.silu(h)).transpose(1, 2)


class ConformerBlock(nn.Module):
    """x + FFN/2 -> x + MHSA(LN x) -> x + Conv(x) -> x + FFN/2 -> LN (reference B.6)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.feed_forward_in = FeedForward(config)
        self.self_attn = SelfAttention(config)
        self.conv = ConvModule(config)
        self.feed_forward_out = FeedForward(config)
        self.layer_norm_att = nn.LayerNorm(config.attention_dim, eps=config.layer_norm_eps)
        self.layer_norm = nn.LayerNorm(config.attention_dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.feed_forward_in(x)
        x = x + self.self_attn(self.layer_norm_att(x), bias)
        x = x + self.conv(x)
        x = x + 0.5 * self.feed_forward_out(x)
        return self.layer_norm(x)
