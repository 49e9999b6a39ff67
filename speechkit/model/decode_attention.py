"""A decode step's attention in one Triton kernel from its projections (split over the cache, then a small combine).

A decode step's attention at small batches is tiny work spread over several launches: written out it is the
rotary embedding of query and key, the cache writes, two matrix products and a softmax, ~15 us a layer at batch 1
on an H200 to read 0.25 MB of cache. Here one program per (sequence, KV head, cache chunk) rotates the group's query
rows and the new key from the qkv projection itself, the chunk holding the step's slot stores the new key and value
there, and each program walks its chunk of slots with an online softmax (logits and weights in fp32, the weights
cast to the value dtype for the second product, as flash kernels do) into a partial result; a second kernel merges
the chunks. Registered as the CUDA operator ``torch.ops.speechkit.decode_step_attention`` (it writes the two cache
buffers), opaque to ``torch.compile`` (a compiled decoder layer calls it, and the decode step's CUDA graph captures
its two launches); registered through ``torch.library.Library``, which, unlike ``torch.library.triton_op``, does not
import ``torch._dynamo`` (3 s of a CPU transcription's start-up).

Whole decode step, H200, torch 2.11, 30 s prompt: attention alone (rotary and cache writes by Inductor), 312.3
tokens/s at batch 1 with 2 chunks against 305.4 written out (``eval/results/h200/step-kernel-session12.json``);
rotary and cache writes in the kernel, batch-1 products as :mod:`speechkit.model.decode_gemv` kernels, 333.8 / 302.9
at batch 1 / 8 against 322.4 / 289.4 written out (``step-fused-attention-session13.json``).
Needs Triton (torch's CUDA wheels bring it); :func:`available` says whether it is there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

try:  # without Triton (CPU installs) the decode step keeps its written-out attention
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK_SLOTS = 64  # cache slots per inner iteration
# Launch the decode step's kernels (here and in decode_gemv) as programmatic dependents on Hopper and later: each
# may start while the kernel before it finishes (see wait_previous)
PDL = True
MIN_GROUP_ROWS = 16  # tl.dot's smallest row count: the group's query rows are padded up to it


class Partials(NamedTuple):
    """The chunk kernel's output, for a merge: ``acc`` (B KV parts rows, hd) fp32 unnormalised output rows,
    ``top`` and ``total`` (B KV parts rows,) their running max and sum of weights; index ((b KV + kv head) parts +
    part) rows + row, rows = the query group padded to ``rows``."""

    acc: Tensor
    top: Tensor
    total: Tensor
    parts: int
    group: int
    rows: int


def available() -> bool:
    return triton is not None


def launch_options(x: Tensor) -> dict:
    """The launch arguments of a decode-step kernel on ``x``'s device: ``PDL`` (the kernels' flag) and Triton's
    ``launch_pdl``, on with :data:`PDL` on a CUDA device of compute capability 9 or more."""
    on = PDL and x.is_cuda and torch.cuda.get_device_properties(x.device).major >= 9
    return {"PDL": True, "launch_pdl": True} if on else {"PDL": False}


if triton is not None:  # kernels decorated at import: TRITON_INTERPRET=1 set before it runs them on the CPU
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    @triton.jit
    def wait_previous():
        """In a kernel launched as a programmatic dependent (``launch_pdl``), which the GPU may start once every
        program of the kernel before it has started (passed this same call): let the next kernel start, then wait
        until the one before has finished and its writes are visible. The code before this call may run before
        any number of earlier kernels end: it reads only what no kernel of the step writes (weights) and writes
        nothing. A kernel launched plainly after one of these waits for its end as ever."""
        gdc_launch_dependents()
        gdc_wait()

    @triton.jit
    def _cache_block(k_base, v_base, bias_at, cols, stop, k_ss, v_ss, dims):
        """The keys, values (BLOCK, HEAD_DIM) and fp32 bias (BLOCK,) of cache slots ``cols`` (0, 0, -inf from
        ``stop`` on)."""
        valid = cols < stop
        k = tl.load(k_base + cols[:, None] * k_ss + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_base + cols[:, None] * v_ss + dims[None, :], mask=valid[:, None], other=0.0)
        return k, v, tl.load(bias_at + cols, mask=valid, other=float("-inf")).to(tl.float32)

    @triton.jit
    def _attend_block(q, k, v, bias, fresh, new_k, new_v, top, total, acc, PRECISION: tl.constexpr,
                      SCALE: tl.constexpr):  # fmt: skip
        """One block of slots into the online softmax: ``fresh`` (BLOCK, 1) marks the step's own slot, whose key
        and value are this step's (from registers); the updated running max, sum of weights and output rows."""
        k = tl.where(fresh, new_k[None, :], k)
        v = tl.where(fresh, new_v[None, :], v)
        logits = tl.dot(q, tl.trans(k), input_precision=PRECISION) * SCALE + bias[None, :]  # (ROWS, BLOCK)
        new_top = tl.maximum(top, tl.max(logits, 1))
        safe = tl.where(new_top == float("-inf"), 0.0, new_top)  # all masked so far: no NaN from -inf - -inf
        weights = tl.exp(logits - safe[:, None])
        rescale = tl.exp(top - safe)
        total = total * rescale + tl.sum(weights, 1)
        acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
        return new_top, total, acc

    @triton.jit
    def _chunk_kernel(qkv_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, slot_ptr, bias_ptr, acc_ptr, max_ptr, sum_ptr,
                      qkv_sb, rope_sb, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, bias_sb, kv_heads, slots, chunk,
                      HEADS: tl.constexpr, GROUP: tl.constexpr, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
                      ROTARY: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr,
                      SCALE: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        """One (sequence, KV head) and one chunk of ``chunk`` slots: the group's query rows and the new key rotated,
        the new key and value used from registers at the step's slot and stored there by the chunk holding it,
        unnormalised output rows, their running max and sum of weights into the partial buffers
        (chunk-major after the (sequence, KV head) index). ``PDL``: see :func:`wait_previous`; the chunk's first
        block of slots is read before that wait (no other kernel writes this layer's cache, and its own writes of
        earlier steps ended with them), the step's tables, slot and bias too (written before the step's first
        dependent kernel)."""
        pair = tl.program_id(0)
        part = tl.program_id(1)
        parts = tl.num_programs(1)
        batch = pair // kv_heads
        head = pair % kv_heads
        rows = tl.arange(0, ROWS)
        dims = tl.arange(0, HEAD_DIM)
        k_base = k_ptr + batch * k_sb + head * k_sh
        v_base = v_ptr + batch * v_sb + head * v_sh
        bias_at = bias_ptr + batch * bias_sb
        start = part * chunk
        stop = tl.minimum(start + chunk, slots)
        first_cols = start + tl.arange(0, BLOCK)
        first_k, first_v, first_bias = _cache_block(k_base, v_base, bias_at, first_cols, stop, k_ss, v_ss, dims)
        # rotate-half over the first ROTARY dims: d pairs with d +- ROTARY / 2, the first half's partner negated
        rotated = dims < ROTARY
        partner = tl.where(dims < ROTARY // 2, dims + ROTARY // 2, dims - ROTARY // 2)
        sign = tl.where(dims < ROTARY // 2, -1.0, 1.0)
        cos = tl.load(cos_ptr + batch * rope_sb + dims, mask=rotated, other=1.0).to(tl.float32)
        sin = tl.load(sin_ptr + batch * rope_sb + dims, mask=rotated, other=0.0).to(tl.float32)
        slot = tl.load(slot_ptr)
        if PDL:
            wait_previous()
        dtype = k_ptr.dtype.element_ty
        base = qkv_ptr + batch * qkv_sb
        q_at = base + (head * GROUP + rows[:, None]) * HEAD_DIM
        live = rows[:, None] < GROUP
        q = tl.load(q_at + dims[None, :], mask=live, other=0.0).to(tl.float32)
        q_partner = tl.load(q_at + partner[None, :], mask=live & rotated[None, :], other=0.0).to(tl.float32)
        q = (q * cos[None, :] + sign[None, :] * q_partner * sin[None, :]).to(dtype)
        k_at = base + (HEADS + head) * HEAD_DIM
        new_k = tl.load(k_at + dims).to(tl.float32)
        new_k = (new_k * cos + sign * tl.load(k_at + partner, mask=rotated, other=0.0).to(tl.float32) * sin).to(dtype)
        new_v = tl.load(base + (HEADS + kv_heads + head) * HEAD_DIM + dims)
        top = tl.full((ROWS,), float("-inf"), tl.float32)
        total = tl.zeros((ROWS,), tl.float32)
        acc = tl.zeros((ROWS, HEAD_DIM), tl.float32)
        # an empty chunk (start >= stop) leaves them as they are: every slot of its block is masked
        top, total, acc = _attend_block(q, first_k, first_v, first_bias, (first_cols == slot)[:, None], new_k, new_v,
                                        top, total, acc, PRECISION, SCALE)  # fmt: skip
        for first in range(start + BLOCK, stop, BLOCK):
            cols = first + tl.arange(0, BLOCK)
            k, v, bias = _cache_block(k_base, v_base, bias_at, cols, stop, k_ss, v_ss, dims)
            top, total, acc = _attend_block(q, k, v, bias, (cols == slot)[:, None], new_k, new_v, top, total, acc,
                                            PRECISION, SCALE)  # fmt: skip
        if (slot >= start) & (slot < stop):  # after the loop: its loads need not wait for these stores
            tl.store(k_base + slot * k_ss + dims, new_k)
            tl.store(v_base + slot * v_ss + dims, new_v)
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

    def chunk_partials(qkv: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, slot: Tensor,
                       bias: Tensor, heads: int, parts: int) -> Partials:  # fmt: skip
        """The chunk kernel's half of :func:`decode_step_attention` (same arguments): the caches written, the
        chunks' unnormalised outputs and softmax statistics returned for a merge."""
        batch, kv_heads, slots, head_dim = k_cache.shape
        group = heads // kv_heads
        rows = max(MIN_GROUP_ROWS, triton.next_power_of_2(group))
        chunk = -(-slots // (parts * BLOCK_SLOTS)) * BLOCK_SLOTS
        acc = torch.empty(batch * kv_heads * parts * rows, head_dim, dtype=torch.float32, device=qkv.device)
        top = torch.empty(batch * kv_heads * parts * rows, dtype=torch.float32, device=qkv.device)
        total = torch.empty_like(top)
        qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
        bias_sb = bias.stride(0) if bias.shape[0] > 1 else 0
        _chunk_kernel[(batch * kv_heads, parts)](
            qkv, cos, sin, k_cache, v_cache, slot, bias, acc, top, total, qkv.stride(0), cos.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
            v_cache.stride(2), bias_sb, kv_heads, slots, chunk, HEADS=heads, GROUP=group, ROWS=rows,
            HEAD_DIM=head_dim, ROTARY=cos.shape[-1], BLOCK=BLOCK_SLOTS,
            PRECISION="ieee" if qkv.dtype == torch.float32 else "tf32",  # fp32 stays fp32 (no TF32 products)
            SCALE=head_dim**-0.5, **launch_options(qkv),
        )  # fmt: skip
        return Partials(acc, top, total, parts, group, rows)

    def decode_step_attention(qkv: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, slot: Tensor,
                              bias: Tensor, heads: int, parts: int) -> Tensor:  # fmt: skip
        """One decode step's attention from its projections: ``qkv`` (B, (H + 2 KV) hd) the query, key and value
        heads of one new token per sequence, ``cos``/``sin`` (B, rotary) its rotary tables (rotate-half layout,
        attention scale included), ``k_cache``/``v_cache`` (B, KV, S, hd) (unit stride along hd), ``slot`` (1,)
        the slot this step writes, ``bias`` (B or 1, S) additive (0 or -inf per slot, the new slot included) ->
        (B, H hd) in qkv's dtype, the heads' outputs. Query and key are rotated as
        :func:`speechkit.model.rope.apply_rotary` does (in fp32, rounded once), the rotated key and the value are
        stored at ``slot`` of the caches. The cache is split into ``parts`` chunks (a power of two) of whole
        :data:`BLOCK_SLOTS` blocks, one program each."""
        part = chunk_partials(qkv, cos, sin, k_cache, v_cache, slot, bias, heads, parts)
        batch, kv_heads, _, head_dim = k_cache.shape
        out = qkv.new_empty(batch, heads * head_dim)
        _merge_kernel[(batch * kv_heads,)](part.acc, part.top, part.total, out, PARTS=parts, GROUP=part.group,
                                           ROWS=part.rows, HEAD_DIM=head_dim)  # fmt: skip
        return out

    _LIBRARY = torch.library.Library("speechkit", "DEF")
    _LIBRARY.define("decode_step_attention(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
                    "Tensor slot, Tensor bias, int heads, int parts) -> Tensor")  # fmt: skip
    _LIBRARY.impl("decode_step_attention", decode_step_attention, "CUDA")
    _LIBRARY.impl("decode_step_attention",
                  lambda qkv, cos, sin, k_cache, v_cache, slot, bias, heads, parts: qkv.new_empty(
                      qkv.shape[0], heads * k_cache.shape[-1]), "Meta")  # fmt: skip
