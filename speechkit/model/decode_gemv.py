"""A batch-1 decode step's weight products as Triton matrix-vector kernels, with the neighbouring elementwise work
fused in.

At one token a decoder layer's four products read its weights once (1.6 ms of an H200's 4.8 TB/s for the 7.7 GB
of a step) and cuBLAS reaches 1.9-3.8 TB/s on them; a plain kernel with one program per few output rows, each
walking the input dimension in wide tiles, reads 2.8-4.0 TB/s (``eval/bench/step_gemv.py``, H200, 32 weight copies
per CUDA graph, us per product cuBLAS / here: qkv 10.9 / 9.6, o 10.2 / 6.8, gate_up 26.2 / 25.3, down 18.5 / 14.2).
The same kernel takes the layer's other small kernels into it:

- ``norm_weight``: the input is RMS-normalised first, as :class:`speechkit.model.decoder.RMSNorm`, each program
  summing the squares itself (a 3072-wide vector) in the pass that reads the weights: the norm weight multiplies the
  input and 1 / rms the finished sums, all in fp32 (RMSNorm rounds the normalised input to bf16 twice; a first pass
  over the input for the rms cost ~0.5 us per product in latency on an H200);
- ``gated``: the weight's rows are ``gate_up_proj``'s (gate, then up), the output up * SiLU(gate);
- ``residual``: the output is residual + product (the layer's skip connections).

After the product, every intermediate is rounded to the input dtype where the unfused layer rounds it (the product,
SiLU, the gated product, the sum); before it, the normalised input is not rounded (see above). Registered as the CUDA
operator ``torch.ops.speechkit.decode_linear`` with a meta kernel, opaque to ``torch.compile`` as
:mod:`speechkit.model.decode_attention`'s; :func:`available` says whether Triton is there.
``torch.ops.speechkit.decode_attention_o`` is that module's attention followed by o_proj's product, the attention's
merge of its cache chunks done by the product's programs on the columns they read (one kernel fewer a layer).

On Hopper the kernels are launched as programmatic dependents (:data:`speechkit.model.decode_attention.PDL`) and each
program loads its first weight tile before waiting for the kernel before it (:data:`PREFETCH`): the weight reads
start under the previous kernel's tail, most of all o_proj's during the attention kernel's 16 programs.

Whole batch-1 step, H200, 30 s prompt (``eval/results/h200``): 311 tokens/s with cuBLAS products, 331 with these
kernels; with the rest of session 13's fusions, 343-345 (2.91 ms a step, 198 kernels); with the dependent launches
and the prefetch, 359-362, and the attention's first cache block read before its wait, 370 (session 14).
"""

from __future__ import annotations

import torch
from torch import Tensor

from speechkit.model import decode_attention

try:  # without Triton (CPU installs) the decode step keeps its cuBLAS products
    import triton
    import triton.language as tl
except ImportError:
    triton = None


PREFETCH = True  # each program loads its weight tiles one iteration ahead, the first before waiting (PDL)


def available() -> bool:
    return triton is not None


def tile(rows_out: int, width: int, gated: bool) -> tuple[int, int, int]:
    """(output rows, input columns, warps) per program: the fastest of 12 tiles in ``eval/bench/step_gemv.py`` at
    the released shapes (H200): gated 8 x 512, 4 warps; qkv (5120 x 3072) 4 x 512, 4; LM head (200064 x 3072) 16 x
    1024, 8; o (3072 x 3072) and down (3072 x 8192) 8 x 1024, 8. Columns shrink to the input width on small models."""
    if gated:
        rows, columns, warps = 8, 512, 4
    elif rows_out > 65536:
        rows, columns, warps = 16, 1024, 8
    elif rows_out > width:
        rows, columns, warps = 4, 512, 4
    else:
        rows, columns, warps = 8, 1024, 8
    return rows, min(columns, triton.next_power_of_2(width)), warps


if triton is not None:  # kernels decorated at import: TRITON_INTERPRET=1 set before it runs them on the CPU

    @triton.jit
    def _merged_input(acc_ptr, top_ptr, total_ptr, cols, inside, PARTS: tl.constexpr, GROUP: tl.constexpr,
                      ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, dtype: tl.constexpr):  # fmt: skip
        """Attention output columns ``cols`` (0 where not ``inside``) of one sequence from the chunk kernel's
        partials (:class:`speechkit.model.decode_attention.Partials`), as its merge kernel computes them, rounded to
        ``dtype``: column c is head c // HEAD_DIM, dimension c % HEAD_DIM."""
        head = cols // HEAD_DIM
        index = (head // GROUP * PARTS + tl.arange(0, PARTS)[:, None]) * ROWS + head[None, :] % GROUP  # (PARTS, cols)
        both = inside[None, :]
        tops = tl.load(top_ptr + index, mask=both, other=0.0)
        top = tl.max(tops, 0)
        scale = tl.exp(tops - tl.where(top == float("-inf"), 0.0, top)[None, :])
        total = tl.sum(tl.load(total_ptr + index, mask=both, other=1.0) * scale, 0)
        acc = tl.load(acc_ptr + index * HEAD_DIM + (cols % HEAD_DIM)[None, :], mask=both, other=0.0)
        return tl.where(inside, tl.sum(acc * scale, 0) / total, 0.0).to(dtype)

    @triton.jit
    def _weight_tile(w_ptr, rows, live, cols, rows_out, width, GATED: tl.constexpr):
        """The (rows, cols) tile of W and, ``GATED``, of its up half (else W's again); 0 outside W."""
        offsets = rows[:, None] * width + cols[None, :]
        both = live[:, None] & (cols < width)[None, :]
        w = tl.load(w_ptr + offsets, mask=both, other=0.0)
        if GATED:
            return w, tl.load(w_ptr + rows_out * width + offsets, mask=both, other=0.0)
        return w, w

    @triton.jit
    def _gemv_kernel(w_ptr, x_ptr, norm_ptr, residual_ptr, y_ptr, top_ptr, total_ptr, rows_out, width, eps,
                     BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, NORM: tl.constexpr, GATED: tl.constexpr,
                     RESIDUAL: tl.constexpr, MERGE: tl.constexpr, PARTS: tl.constexpr, GROUP: tl.constexpr,
                     ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, PDL: tl.constexpr,
                     PREFETCH: tl.constexpr):  # fmt: skip
        """y[rows] for BLOCK_ROWS output rows: W (rows_out or 2 x rows_out gated, width) row-major, x (width,);
        ``MERGE``: x merged from attention partials at ``x_ptr`` (acc), ``top_ptr``, ``total_ptr`` (sizes
        PARTS, GROUP, ROWS, HEAD_DIM; see :func:`_merged_input`). ``PDL``: launched as a programmatic dependent
        (see :func:`speechkit.model.decode_attention.wait_previous`); ``PREFETCH``: each weight tile is loaded one
        iteration ahead, the first before that wait."""
        dtype = w_ptr.dtype.element_ty
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        live = rows < rows_out
        acc = tl.zeros((BLOCK_ROWS, BLOCK_COLS), tl.float32)
        if GATED:
            acc_up = tl.zeros((BLOCK_ROWS, BLOCK_COLS), tl.float32)
        if NORM:
            squares = tl.zeros((BLOCK_COLS,), tl.float32)
        span = tl.arange(0, BLOCK_COLS)
        if PREFETCH:  # the first weight tile read while the previous kernel may still run (PDL)
            w, w_up = _weight_tile(w_ptr, rows, live, span, rows_out, width, GATED)
        if PDL:
            decode_attention.wait_previous()
        for first in range(0, width, BLOCK_COLS):
            cols = first + span
            inside = cols < width
            if MERGE:
                x = _merged_input(x_ptr, top_ptr, total_ptr, cols, inside, PARTS, GROUP, ROWS, HEAD_DIM, dtype)
                x = x.to(tl.float32)
            else:
                x = tl.load(x_ptr + cols, mask=inside, other=0.0).to(tl.float32)
            if NORM:  # the sum of squares in the same pass; 1 / rms scales the sums at the end
                squares += x * x
                x *= tl.load(norm_ptr + cols, mask=inside, other=0.0).to(tl.float32)
            if not PREFETCH:
                w, w_up = _weight_tile(w_ptr, rows, live, cols, rows_out, width, GATED)
            acc += w.to(tl.float32) * x[None, :]
            if GATED:
                acc_up += w_up.to(tl.float32) * x[None, :]
            if PREFETCH:  # the next tile (none past the last: masked)
                w, w_up = _weight_tile(w_ptr, rows, live, cols + BLOCK_COLS, rows_out, width, GATED)
        y = tl.sum(acc, 1)
        if GATED:
            up = tl.sum(acc_up, 1)
        if NORM:
            inv_rms = 1.0 / tl.sqrt(tl.sum(squares, 0) / width + eps)
            y *= inv_rms
            if GATED:
                up *= inv_rms
        y = y.to(dtype)
        if GATED:
            gate = y.to(tl.float32)
            silu = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
            y = (up.to(dtype).to(tl.float32) * silu).to(dtype)
        if RESIDUAL:
            y = (tl.load(residual_ptr + rows, mask=live, other=0.0).to(tl.float32) + y.to(tl.float32)).to(dtype)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=live)

    def decode_linear(x: Tensor, weight: Tensor, norm_weight: Tensor | None, eps: float, residual: Tensor | None,
                      gated: bool, float_out: bool = False) -> Tensor:  # fmt: skip
        """One token's x (..., width) (one row in all) times ``weight`` (out, width) -> (..., out) in x's dtype, or
        (..., out / 2) ``gated``; ``norm_weight`` (width,) RMS-normalises x first (``eps`` added to the mean
        square), ``residual`` (..., out) is added to the product (see the module docstring); ``float_out``: the
        result (rounded to x's dtype as ever) stored in fp32 (logits)."""
        x, residual = x.contiguous(), None if residual is None else residual.contiguous()
        rows_out = weight.shape[0] // 2 if gated else weight.shape[0]
        width = weight.shape[1]
        y = x.new_empty(*x.shape[:-1], rows_out, dtype=torch.float32 if float_out else x.dtype)
        rows, columns, warps = tile(rows_out, width, gated)
        _gemv_kernel[(triton.cdiv(rows_out, rows),)](
            weight, x, x if norm_weight is None else norm_weight, x if residual is None else residual, y, x, x,
            rows_out, width, eps, BLOCK_ROWS=rows, BLOCK_COLS=columns, NORM=norm_weight is not None, GATED=gated,
            RESIDUAL=residual is not None, MERGE=False, PARTS=1, GROUP=1, ROWS=1, HEAD_DIM=1, num_warps=warps,
            PREFETCH=PREFETCH, **decode_attention.launch_options(x),
        )  # fmt: skip
        return y

    def decode_attention_o(qkv: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, slot: Tensor,
                           bias: Tensor, heads: int, parts: int, o_weight: Tensor,
                           residual: Tensor) -> Tensor:  # fmt: skip
        """One sequence's decode-step attention and output projection: residual (..., hidden) + o_weight @ attention,
        the attention as :func:`speechkit.model.decode_attention.decode_step_attention` (same arguments, B = 1,
        caches written) with its merge kernel folded into the matrix-vector kernel, which merges the chunks'
        partial outputs of the columns it reads (the same sums as the merge kernel, rounded to the weight dtype)."""
        part = decode_attention.chunk_partials(qkv, cos, sin, k_cache, v_cache, slot, bias, heads, parts)
        rows_out, width = o_weight.shape
        residual = residual.contiguous()
        y = torch.empty_like(residual)
        rows, columns, warps = tile(rows_out, width, False)
        head_dim = k_cache.shape[-1]
        _gemv_kernel[(triton.cdiv(rows_out, rows),)](
            o_weight, part.acc, residual, residual, y, part.top, part.total, rows_out, width, 0.0,
            BLOCK_ROWS=rows, BLOCK_COLS=columns, NORM=False, GATED=False, RESIDUAL=True, MERGE=True, PARTS=parts,
            GROUP=part.group, ROWS=part.rows, HEAD_DIM=head_dim, num_warps=warps,
            PREFETCH=PREFETCH, **decode_attention.launch_options(qkv),
        )  # fmt: skip
        return y

    def _decode_linear_meta(x, weight, norm_weight, eps, residual, gated, float_out=False):
        return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if gated else weight.shape[0],
                           dtype=torch.float32 if float_out else x.dtype)  # fmt: skip

    _LIBRARY = torch.library.Library("speechkit", "FRAGMENT")
    _LIBRARY.define("decode_linear(Tensor x, Tensor weight, Tensor? norm_weight, float eps, Tensor? residual, "
                    "bool gated, bool float_out=False) -> Tensor")  # fmt: skip
    _LIBRARY.impl("decode_linear", decode_linear, "CUDA")
    _LIBRARY.impl("decode_linear", _decode_linear_meta, "Meta")
    _LIBRARY.define("decode_attention_o(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
                    "Tensor slot, Tensor bias, int heads, int parts, Tensor o_weight, Tensor residual) "
                    "-> Tensor")  # fmt: skip
    _LIBRARY.impl("decode_attention_o", decode_attention_o, "CUDA")
    _LIBRARY.impl("decode_attention_o", lambda *args: torch.empty_like(args[-1], memory_format=torch.contiguous_format),
                  "Meta")  # fmt: skip
