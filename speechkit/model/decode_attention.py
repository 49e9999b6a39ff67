"""Grouped decode-step attention in one Triton kernel (split over the cache, then a small combine).

A decode step's attention at small batches is tiny work spread over several launches: written out it is two
matrix products and a softmax kernel, ~11 us a layer at batch 1 on an H200 (session 11's profile) to read
0.25 MB of cache. Here one program per (sequence, KV head, cache chunk) loads the group of query rows once, walks its
chunk of slots with an online softmax (logits and weights in fp32, the weights cast to the value dtype for the
second product, as flash kernels do) and writes a partial result; a second kernel merges the chunks. Registered
as the CUDA operator ``torch.ops.speechkit.grouped_decode_attention``, opaque to ``torch.compile`` (a compiled
decoder layer calls it, and the decode step's CUDA graph captures its two launches); registered through
``torch.library.Library``, which, unlike ``torch.library.triton_op``, does not import ``torch._dynamo`` (3 s of a
CPU transcription's start-up).

Whole decode step, H200, torch 2.11, 30 s prompt, one run: 312.3 tokens/s at batch 1 with 2 chunks against
305.4 written out (``eval/results/h200/step-kernel-session12.json``). Needs Triton (torch's CUDA wheels bring
it); :func:`available` says whether it is there.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # without Triton (CPU installs) the decode step keeps its written-out attention
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK_SLOTS = 64  # cache slots per inner iteration
MIN_GROUP_ROWS = 16  # tl.dot's smallest row count: the group's query rows are padded up to it


def available() -> bool:
    return triton is not None


if triton is not None:  # kernels decorated at import: TRITON_INTERPRET=1 set before it runs them on the CPU

    @triton.jit
    def _chunk_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, acc_ptr, max_ptr, sum_ptr,
                      q_sb, q_sh, q_sg, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, bias_sb,
                      kv_heads, slots, chunk, GROUP: tl.constexpr, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK: tl.constexpr, PRECISION: tl.constexpr, SCALE: tl.constexpr):  # fmt: skip
        """One (sequence, KV head) and one chunk of ``chunk`` slots: unnormalised output rows, their running
        max and sum of weights, into the partial buffers (chunk-major after the (sequence, KV head) index)."""
        pair = tl.program_id(0)
        part = tl.program_id(1)
        parts = tl.num_programs(1)
        batch = pair // kv_heads
        head = pair % kv_heads
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + batch * q_sb + head * q_sh + rows[:, None] * q_sg + dims[None, :],
                    mask=rows[:, None] < GROUP, other=0.0)  # fmt: skip
        k_base = k_ptr + batch * k_sb + head * k_sh
        v_base = v_ptr + batch * v_sb + head * v_sh
        top = tl.full((ROWS,), float("-inf"), tl.float32)
        total = tl.zeros((ROWS,), tl.float32)
        acc = tl.zeros((ROWS, HEAD_DIM), tl.float32)
        start = part * chunk
        stop = tl.minimum(start + chunk, slots)
        for first in range(start, stop, BLOCK):
            cols = first + tl.arange(0, BLOCK)
            valid = cols < stop
            k = tl.load(k_base + cols[:, None] * k_ss + dims[None, :], mask=valid[:, None], other=0.0)
            bias = tl.load(bias_ptr + batch * bias_sb + cols, mask=valid, other=float("-inf")).to(tl.float32)
            logits = tl.dot(q, tl.trans(k), input_precision=PRECISION) * SCALE + bias[None, :]  # (ROWS, BLOCK)
            new_top = tl.maximum(top, tl.max(logits, 1))
            safe = tl.where(new_top == float("-inf"), 0.0, new_top)  # all masked so far: no NaN from -inf - -inf
            weights = tl.exp(logits - safe[:, None])
            rescale = tl.exp(top - safe)
            total = total * rescale + tl.sum(weights, 1)
            v = tl.load(v_base + cols[:, None] * v_ss + dims[None, :], mask=valid[:, None], other=0.0)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
            top = new_top
        out = (pair * parts + part) * ROWS + rows
        tl.store(acc_ptr + out[:, None] * HEAD_DIM + dims[None, :], acc)
        tl.store(max_ptr + out, top)
        tl.store(sum_ptr + out, total)

    @triton.jit
    def _merge_kernel(acc_ptr, max_ptr, sum_ptr, out_ptr, PARTS: tl.constexpr, GROUP: tl.constexpr,
                      ROWS: tl.constexpr, HEAD_DIM: tl.constexpr):  # fmt: skip
        """One (sequence, KV head): the chunks' partial rows merged and normalised, (GROUP, HEAD_DIM) out."""
        pair = tl.program_id(0)
        parts = tl.arange(0, PARTS)
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, HEAD_DIM)
        index = (pair * PARTS + parts[:, None]) * ROWS + rows[None, :]  # (PARTS, ROWS)
        tops = tl.load(max_ptr + index)
        top = tl.max(tops, 0)
        safe = tl.where(top == float("-inf"), 0.0, top)
        scale = tl.exp(tops - safe[None, :])  # (PARTS, ROWS)
        total = tl.sum(tl.load(sum_ptr + index) * scale, 0)
        acc = tl.load(acc_ptr + index[:, :, None] * HEAD_DIM + dims[None, None, :])  # (PARTS, ROWS, HEAD_DIM)
        out = tl.sum(acc * scale[:, :, None], 0) / total[:, None]
        tl.store(out_ptr + (pair * GROUP + rows[:, None]) * HEAD_DIM + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < GROUP)  # fmt: skip

    def grouped_decode_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, parts: int) -> Tensor:
        """q (B, KV, G, hd) query rows grouped by KV head, k and v (B, KV, S, hd) (unit stride along hd),
        ``bias`` (B or 1, S) additive (0 or -inf) -> (B, KV, G, hd) in q's dtype; the cache split into ``parts``
        chunks (a power of two) of whole :data:`BLOCK_SLOTS` blocks, one program each."""
        batch, kv_heads, group, head_dim = q.shape
        slots = k.shape[2]
        rows = max(MIN_GROUP_ROWS, triton.next_power_of_2(group))
        chunk = -(-slots // (parts * BLOCK_SLOTS)) * BLOCK_SLOTS
        acc = torch.empty(batch * kv_heads * parts * rows, head_dim, dtype=torch.float32, device=q.device)
        top = torch.empty(batch * kv_heads * parts * rows, dtype=torch.float32, device=q.device)
        total = torch.empty_like(top)
        out = torch.empty_like(q)
        bias_sb = bias.stride(0) if bias.shape[0] > 1 else 0
        _chunk_kernel[(batch * kv_heads, parts)](
            q, k, v, bias, acc, top, total, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
            k.stride(2), v.stride(0), v.stride(1), v.stride(2), bias_sb, kv_heads, slots, chunk,
            GROUP=group, ROWS=rows, HEAD_DIM=head_dim, BLOCK=BLOCK_SLOTS,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32 stays fp32 (no TF32 products)
            SCALE=head_dim**-0.5,
        )
        _merge_kernel[(batch * kv_heads,)](
            acc, top, total, out, PARTS=parts, GROUP=group, ROWS=rows, HEAD_DIM=head_dim
        )
        return out

    _LIBRARY = torch.library.Library("speechkit", "DEF")
    _LIBRARY.define("grouped_decode_attention(Tensor q, Tensor k, Tensor v, Tensor bias, int parts) -> Tensor")
    _LIBRARY.impl("grouped_decode_attention", grouped_decode_attention, "CUDA")
    _LIBRARY.impl("grouped_decode_attention", lambda q, k, v, bias, parts: torch.empty_like(q), "Meta")
