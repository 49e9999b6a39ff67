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
        value, gate = split_linear(self.layer_norm(x), self.gate_up_proj.weight, self.gate_up_proj.bias)
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


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of ``F.linear(x, weight, bias).chunk(2, dim=-1)`` as two contiguous outputs.

    The same numbers from two matmuls over the weight's halves: the elementwise ops that follow then run on
    contiguous tensors, where torch's vectorised kernels take them; on the chunks' strided views they fell to
    the generic kernel (H200, 64 x 30 s clips: ~16 ms of the tower's 151 ms, ~4 ms once contiguous).
    """
    half = weight.shape[0] // 2
    return F.linear(x, weight[:half], bias[:half]), F.linear(x, weight[half:], bias[half:])


def pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A kernel-1 ``conv`` applied to (N, L, C_in) time-major ``x`` as the linear map it is -> (N, L, C_out)."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


class GluPointwiseConv(nn.Module):
    """Pointwise conv to 2d channels, then (value + b1) * SiLU(gate + b2)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.attention_dim
        self.ext_pw_conv_1d = nn.Conv1d(d, 2 * d, kernel_size=1)
        self.b1 = nn.Parameter(torch.zeros(1, d, 1))
        self.b2 = nn.Parameter(torch.zeros(1, d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, d) -> (N, L, d)."""
        # b1 and b2 join the conv's own bias: one add each inside the matmuls instead of two passes over the
        # activations
        bias = self.ext_pw_conv_1d.bias + torch.cat([self.b1.view(-1), self.b2.view(-1)])
        value, gate = split_linear(x, self.ext_pw_conv_1d.weight[:, :, 0], bias)
        return value * F.silu(gate)


class DepthwiseSeparableConv(nn.Module):
    """Causal depthwise conv (output t sees inputs t-k+1 .. t, zeros before the start), then pointwise."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d, k = config.attention_dim, config.kernel_size
        self.dw_conv = nn.Conv1d(d, d, kernel_size=k, groups=d)
        self.pw_conv = nn.Conv1d(d, d, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, d) -> (N, L, d)."""
        length, k = x.shape[1], self.dw_conv.kernel_size[0]
        taps = self.dw_conv.weight[:, 0]  # (d, k); tap k-1 weighs the current frame
        h = torch.addcmul(self.dw_conv.bias, x, taps[:, k - 1])
        # tap k-1-j weighs the frame j steps back: output frames from j on (the zeros before the start add
        # nothing), without a padded copy of the input
        for j in range(1, min(k, length)):
            h[:, j:].addcmul_(x[:, : length - j], taps[:, k - 1 - j])
        return pointwise(h, self.pw_conv)


class ConvModule(nn.Module):
    """LN -> GLU pointwise -> causal depthwise + pointwise -> SiLU -> pointwise (no batch norm).

    Time-major (N, L, d) like the rest of the block, on the official Conv1d weights: channel-major convs
    made every block transpose its activations twice, and on a GPU the kernel-1 convs ran as GEMMs with an
    odd row stride (375 tokens for 30 s) and the residual add on a transposed operand took the slow strided
    path (H200 profile of 64 x 30 s clips, session 9).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.attention_dim, eps=config.layer_norm_eps)
        self.glu = GluPointwiseConv(config)
        self.dw_sep_conv_1d = DepthwiseSeparableConv(config)
        self.ext_pw_conv_1d = nn.Conv1d(config.attention_dim, config.attention_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, d) -> (N, L, d)."""
        h = self.dw_sep_conv_1d(self.glu(self.layer_norm(x)))
        return pointwise(F.silu(h), self.ext_pw_conv_1d)


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
        x = torch.add(x, self.feed_forward_in(x), alpha=0.5)  # one pass; 0.5 * y is exact, so the same sum
        x = x + self.self_attn(self.layer_norm_att(x), bias)
        x = x + self.conv(x)
        x = torch.add(x, self.feed_forward_out(x), alpha=0.5)
        return self.layer_norm(x)
