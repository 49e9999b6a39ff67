"""Grouped-query self-attention of the Phi-4-mini decoder, with the mask it needs.

Fused ``qkv_proj`` rows: Q (num_heads * head_dim), then K, then V (num_kv_heads * head_dim each),
head-major. Query head h reads KV head h // (num_heads / num_kv_heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from speechkit.model import decode_attention
from speechkit.model.config import DecoderConfig, LoraConfig
from speechkit.model.kv_cache import write_slots
from speechkit.model.lora import LoRALinear
from speechkit.model.rope import RopeTables, apply_rotary

# SDPA kernels without cuDNN's: on an H100 (torch 2.11) cuDNN attention was chosen for our masked bf16 calls and
# spent ~7 ms of host time building an execution plan for every new shape (session 5's profile of the demo's
# training loop: 8 such calls a step, 2.3 ms of GPU work). Batches of speech vary in length on every call.
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention`` restricted to :data:`SDPA_BACKENDS`; same arguments."""
    with sdpa_kernel(SDPA_BACKENDS):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def make_linear(in_features: int, out_features: int, lora: LoraConfig | None, name: str) -> nn.Module:
    """``LoRALinear`` when ``lora`` targets ``name``, else a bias-free ``nn.Linear`` (out, in)."""
    if lora is not None and name in lora.targets:
        return LoRALinear(in_features, out_features, lora.rank, lora.scale)
    return nn.Linear(in_features, out_features, bias=False)


def build_attention_mask(
    query_slots: Tensor, kv_len: int, padding_mask: Tensor | None
) -> Tensor:
    """Boolean mask (B or 1, 1, L, kv_len): True where a query may attend to a key.

    ``query_slots`` (L,) are the KV slots of the queries; key slot j is visible to query slot s when
    j <= s and (with ``padding_mask`` (B, <= kv_len), 1 = real token) slot j is not padding. Slots
    beyond the padding mask's width count as real; they are future slots, hidden by causality.
    """
    keys = torch.arange(kv_len, device=query_slots.device)
    allowed = keys[None, :] <= query_slots[:, None]  # (L, kv_len)
    if padding_mask is None:
        return allowed[None, None]
    real = padding_mask.to(torch.bool)
    real = F.pad(real, (0, kv_len - real.shape[1]), value=True)
    allowed = allowed[None] & real[:, None, :]  # (B, L, kv_len)
    # A left-padding query sees no real key; letting it see itself keeps SDPA away from an all-masked
    # row (NaN), and NaN in a padded value row would leak into real rows through 0 * NaN.
    allowed = allowed | (keys[None, :] == query_slots[:, None])[None]
    return allowed[:, None]


# From this many sequences a decode step's attention runs on an SDPA kernel, below it written out: see
# :func:`grouped_step_attention`.
STEP_SDPA_FROM_BATCH = 16
# Below STEP_SDPA_FROM_BATCH on CUDA with Triton: the step attention as a Triton kernel over this many cache chunks
# (:mod:`speechkit.model.decode_attention`); 0 = written out. H200, torch 2.11, 30 s prompt, decode tokens/s at batch
# 1 / 8 in one run: written out 305.4 / 289.6, 1 chunk 297.9 / 289.9, 2 chunks 312.3 / 296.5, 4 chunks 305.6 / 287.6
# (session 12); with the batch-1 GEMVs, 2 chunks 331.2, 8 chunks 328.6 at batch 1 (session 13).
STEP_KERNEL_PARTS = 2


def step_on_cudnn(q: Tensor) -> bool:
    """Whether a decode step's SDPA kernel for ``q`` (B, H, 1, hd) is cuDNN's (else the mem-efficient one):
    half-precision heads of up to 128 on Hopper GPUs, where it was measured. Its per-shape plan costs
    milliseconds of host time once; a decode step's shapes are fixed (a CUDA graph per batch), so that cost
    is paid at capture. Constant-folded under ``torch.compile``."""
    return (
        q.is_cuda
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 128
        and torch.cuda.get_device_properties(q.device).major >= 9
    )


def step_on_triton(x: Tensor, head_dim: int) -> bool:
    """Whether a decode step below :data:`STEP_SDPA_FROM_BATCH` on ``x``'s device and dtype runs
    :mod:`speechkit.model.decode_attention`'s kernel: CUDA with Triton, on GPUs of compute capability 8 or more
    (Triton's bf16 products need them; measured on Hopper), heads of a power of two from 16 up (the kernel's tile
    sizes), :data:`STEP_KERNEL_PARTS` set. Constant-folded under ``torch.compile``."""
    return (
        STEP_KERNEL_PARTS > 0
        and x.is_cuda
        and decode_attention.available()
        and head_dim >= 16
        and head_dim & (head_dim - 1) == 0
        and torch.cuda.get_device_properties(x.device).major >= 8
    )


def grouped_step_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Attention of one new token per sequence over a KV cache: q (B, H, 1, hd), k and v (B, KV, S, hd),
    ``bias`` (B or 1, 1, 1, S) additive (0 or -inf per slot) -> (B, H, 1, hd).

    Query head h reads KV head h // (H / KV), so the heads of one KV head are consecutive: they become the
    rows of one (group, hd) query per KV head, and the cache is read once. Below :data:`STEP_SDPA_FROM_BATCH`
    sequences it is written out (logits and softmax in fp32, the weights cast to the value dtype for the second
    product, as flash kernels do; where :func:`step_on_triton`, :meth:`Attention.attend` runs the Triton kernel of
    :mod:`speechkit.model.decode_attention` instead); from there on an SDPA kernel, cuDNN's where
    :func:`step_on_cudnn`, else the mem-efficient one. Whole decode step on an H200 (torch 2.11, bf16, 486
    slots, layers compiled, CUDA graph), written out / cuDNN in one run: batch 1 3.29 / 3.40 ms, 8 3.43 / 3.48,
    16 3.72 / 3.63, 32 4.28 / 4.07, 64 5.38 (mem-efficient) / 4.89. Written out / mem-efficient, an earlier run:
    batch 1 3.30 / 3.69, 16 3.74 / 3.95, 32 4.45 / 4.31, 64 5.66 / 5.35 (other GPUs: not measured).
    """
    batch, heads, _, head_dim = q.shape
    kv_heads = k.shape[1]
    grouped = q.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    if batch >= STEP_SDPA_FROM_BATCH:  # both kernels return a transposed layout: the reshape copies
        if step_on_cudnn(q):
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=bias, scale=head_dim**-0.5)
        else:
            out = sdpa(grouped, k, v, attn_mask=bias, scale=head_dim**-0.5)
        return out.reshape(batch, heads, 1, head_dim)
    logits = torch.matmul(grouped, k.transpose(-1, -2)).float() * head_dim**-0.5 + bias  # (B, KV, group, S)
    weights = torch.softmax(logits, dim=-1).to(v.dtype)
    return torch.matmul(weights, v).reshape(batch, heads, 1, head_dim)


class Attention(nn.Module):
    """Causal GQA self-attention with partial rotary embedding; SDPA kernel."""

    def __init__(self, config: DecoderConfig, lora: LoraConfig | None = None) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        qkv_out = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
        self.qkv_proj = make_linear(config.hidden_size, qkv_out, lora, "qkv_proj")
        self.o_proj = make_linear(config.num_heads * config.head_dim, config.hidden_size, lora, "o_proj")

    def forward(
        self,
        x: Tensor,
        rope: RopeTables,
        mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None = None,
        cache_position: Tensor | None = None,
        kv_len: int | None = None,
        group_queries: bool = False,
    ) -> Tensor:
        """x (B, L, hidden) -> (B, L, hidden).

        ``mask``: boolean or additive (B or 1, 1, L, kv_len) from :func:`build_attention_mask`, or None for plain
        causal attention over the L new tokens. With ``cache`` (this layer's key and value buffers,
        :meth:`KVCache.layer`), keys/values are written at ``cache_position`` (L,)
        and attention runs over the first ``kv_len`` slots of the buffer (default: all of it).
        ``group_queries`` (L = 1 with a mask only): see :meth:`speechkit.model.decoder.Decoder.forward`.
        """
        return self.o_proj(self.attend(self.qkv_proj(x), rope, mask, cache, cache_position, kv_len, group_queries))

    def step_kernel(self, qkv: Tensor, cache: tuple[Tensor, Tensor] | None, kv_len: int | None) -> bool:
        """Whether a decode step (``group_queries``) of ``qkv`` (B, 1, ...) over all of ``cache`` runs the kernel of
        :mod:`speechkit.model.decode_attention` (:func:`step_on_triton`, B below :data:`STEP_SDPA_FROM_BATCH`)."""
        return (cache is not None and kv_len in (None, cache[0].shape[2]) and qkv.shape[0] < STEP_SDPA_FROM_BATCH
                and step_on_triton(qkv, self.head_dim))  # fmt: skip

    def step_kernel_args(self, qkv: Tensor, rope: RopeTables, mask: Tensor, cache: tuple[Tensor, Tensor],
                         cache_position: Tensor) -> tuple:  # fmt: skip
        """The arguments of :func:`speechkit.model.decode_attention.decode_step_attention` for a decode step (see
        :meth:`attend`)."""
        return (qkv[:, 0], rope.cos[:, 0], rope.sin[:, 0], *cache, cache_position, mask.reshape(mask.shape[0], -1),
                self.num_heads, STEP_KERNEL_PARTS)  # fmt: skip

    def attend(
        self,
        qkv: Tensor,
        rope: RopeTables,
        mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None = None,
        cache_position: Tensor | None = None,
        kv_len: int | None = None,
        group_queries: bool = False,
    ) -> Tensor:
        """The attention between the projections: ``qkv_proj``'s output (B, L, (H + 2 KV) hd) -> the heads' outputs
        (B, L, H hd), ``o_proj``'s input; arguments as :meth:`forward`'s."""
        batch, length, _ = qkv.shape
        heads, kv_heads = self.num_heads, self.num_kv_heads
        if group_queries and self.step_kernel(qkv, cache, kv_len):
            # rotary, cache writes and attention in one kernel (and a merge): see decode_attention
            args = self.step_kernel_args(qkv, rope, mask, cache, cache_position)
            return torch.ops.speechkit.decode_step_attention(*args)[:, None]
        qkv = qkv.view(batch, length, heads + 2 * kv_heads, self.head_dim)
        # Q and K heads rotated in one pass: the same elementwise ops, half the kernel launches
        qk = apply_rotary(qkv[:, :, : heads + kv_heads].transpose(1, 2), rope)  # (B, H + KV, L, hd)
        q, k = qk.split([heads, kv_heads], dim=1)  # (B, H, L, hd), (B, KV, L, hd)
        v = qkv[:, :, heads + kv_heads :].transpose(1, 2)  # (B, KV, L, hd)
        if cache is not None:
            k, v = write_slots(cache, cache_position, k, v)  # (B, KV, max_len, hd)
            if kv_len is not None:
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        if group_queries:
            assert length == 1 and mask is not None
            out = grouped_step_attention(q, k, v, mask)
        else:
            out = sdpa(
                q, k, v,
                attn_mask=mask,
                is_causal=mask is None,
                scale=self.head_dim**-0.5,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )  # (B, H, L, hd)
        return out.transpose(1, 2).reshape(batch, length, heads * self.head_dim)
