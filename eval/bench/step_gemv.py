"""Batch-1 decode-step weight products: cuBLAS against Triton GEMV kernels, at the decoder's shapes.

A batch-1 decode step reads ~7.7 GB of weights; on an H200 (4.8 TB/s) that is 1.6 ms, and the step takes
~3.2 ms (session 12). This measures whether hand-written matrix-vector kernels read the weights faster than
cuBLAS at one token, and what fusing the neighbouring elementwise work saves:

- ``plain``: y = W x for qkv (5120 x 3072), o (3072 x 3072), gate_up (16384 x 3072), down (3072 x 8192) and the
  LM head (200064 x 3072);
- ``gate_up_act``: up * SiLU(gate) straight from the gate_up weight (cuBLAS: the product, then one
  elementwise kernel), half the output written;
- ``down_residual``: r + W x (cuBLAS: the product, then an add).

Each case runs 32 distinct weight copies (one per layer, as the step does; more than the 50 MB L2) in one CUDA
graph, best of 5 replays; us per product and the weight bytes read per second. The Triton tile sizes are
searched per shape (each compiled once). Outputs are checked against fp32 products.

    python eval/bench/step_gemv.py --out DIR        # one GPU, bf16; writes DIR/step_gemv.json
    TRITON_INTERPRET=1 python eval/bench/step_gemv.py --tiny   # the kernels' sums on the CPU (checks only)
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

HIDDEN, INTER, QKV, VOCAB, LAYERS = 3072, 8192, 5120, 200064, 32
TILES = list(itertools.product((4, 8, 16), (512, 1024), (4, 8)))  # (rows, columns, warps) per program
TINY_TILES = [(4, 32, 1), (16, 64, 4)]


@triton.jit
def _gemv(w_ptr, x_ptr, r_ptr, y_ptr, n, k, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, RESIDUAL: tl.constexpr):
    """y[rows] = W[rows] x (+ r[rows]) for BLOCK_N rows; k a multiple of BLOCK_K."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    live = rows < n
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for first in range(0, k, BLOCK_K):
        cols = first + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * k + cols[None, :], mask=live[:, None], other=0.0)
        acc += w.to(tl.float32) * tl.load(x_ptr + cols).to(tl.float32)[None, :]
    y = tl.sum(acc, 1)
    if RESIDUAL:
        y += tl.load(r_ptr + rows, mask=live, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=live)


@triton.jit
def _gate_up_act(w_ptr, x_ptr, y_ptr, inter, k, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[rows] = (W[inter + rows] x) * SiLU(W[rows] x): gate rows first, then up rows, as ``gate_up_proj``."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    live = rows < inter
    gate = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    up = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for first in range(0, k, BLOCK_K):
        cols = first + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + cols).to(tl.float32)[None, :]
        offsets = rows[:, None] * k + cols[None, :]
        gate += tl.load(w_ptr + offsets, mask=live[:, None], other=0.0).to(tl.float32) * x
        up += tl.load(w_ptr + inter * k + offsets, mask=live[:, None], other=0.0).to(tl.float32) * x
    g = tl.sum(gate, 1)
    y = tl.sum(up, 1) * g / (1.0 + tl.exp(-g))
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=live)


def triton_plain(w, x, tile, residual=None):
    n, k = w.shape
    rows, cols, warps = tile
    y = torch.empty(n, dtype=x.dtype, device=x.device)
    _gemv[(triton.cdiv(n, rows),)](w, x, x if residual is None else residual, y, n, k, BLOCK_N=rows, BLOCK_K=cols,
                                   RESIDUAL=residual is not None, num_warps=warps)  # fmt: skip
    return y


def triton_gate_up_act(w, x, tile):
    inter, k = w.shape[0] // 2, w.shape[1]
    rows, cols, warps = tile
    y = torch.empty(inter, dtype=x.dtype, device=x.device)
    _gate_up_act[(triton.cdiv(inter, rows),)](w, x, y, inter, k, BLOCK_N=rows, BLOCK_K=cols, num_warps=warps)
    return y


def cublas(case: str, w, x, r):
    y = F.linear(x[None], w)[0]
    if case == "gate_up_act":
        gate, up = y.chunk(2)
        return up * F.silu(gate)
    return y + r if case == "down_residual" else y


def ours(case: str, w, x, r, tile):
    if case == "gate_up_act":
        return triton_gate_up_act(w, x, tile)
    return triton_plain(w, x, tile, r if case == "down_residual" else None)


def reference(case: str, w, x, r):
    y = w.float() @ x.float()
    if case == "gate_up_act":
        gate, up = y.chunk(2)
        return up * F.silu(gate)
    return y + r.float() if case == "down_residual" else y


def _graph_us(run, copies: int) -> float:
    """us per call of ``run(i)`` for i over the weight copies, captured in one CUDA graph (best of 5 replays)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(copies):
            run(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(copies):
            run(i)
    times = []
    for _ in range(6):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / copies)
    return min(times[1:])


def cases(tiny: bool) -> dict[str, tuple[int, int]]:
    """(out rows, in) per case; tiny: small shapes of the same kinds."""
    if tiny:
        return {"plain_o": (48, 64), "gate_up_act": (2 * 40, 64), "down_residual": (48, 128)}
    return {"plain_qkv": (QKV, HIDDEN), "plain_o": (HIDDEN, HIDDEN), "plain_gate_up": (2 * INTER, HIDDEN),
            "plain_down": (HIDDEN, INTER), "plain_lm_head": (VOCAB, HIDDEN), "gate_up_act": (2 * INTER, HIDDEN),
            "down_residual": (HIDDEN, INTER)}  # fmt: skip


def measure(case: str, n: int, k: int, copies: int, tiles: list[tuple[int, int, int]], timed: bool,
            device: str, dtype: torch.dtype, gen: torch.Generator) -> dict:  # fmt: skip
    """Errors against fp32 of cuBLAS and of each Triton tile; with ``timed``, us and TB/s of cuBLAS and the best
    tile."""
    weights = [torch.randn(n, k, generator=gen, device=device, dtype=dtype) * k**-0.5 for _ in range(copies)]
    x = torch.randn(k, generator=gen, device=device, dtype=dtype)
    r = torch.randn(n, generator=gen, device=device, dtype=dtype)
    ref = reference(case, weights[0], x, r)
    scale = ref.abs().max().item()
    row: dict = {"shape": [n, k], "weight_mb": round(n * k * weights[0].element_size() / 1e6, 1)}
    row["cublas_error"] = (cublas(case, weights[0], x, r).float() - ref).abs().max().item() / scale
    best = None
    for tile in (t for t in tiles if t[1] <= k):
        row[f"triton_error_{tile}"] = (ours(case, weights[0], x, r, tile).float() - ref).abs().max().item() / scale
        if timed:
            us = _graph_us(lambda i, t=tile: ours(case, weights[i], x, r, t), copies)
            best = (tile, us) if best is None or us < best[1] else best
    if timed:
        cublas_us = _graph_us(lambda i: cublas(case, weights[i], x, r), copies)
        bytes_read = n * k * weights[0].element_size()
        row |= {"cublas_us": round(cublas_us, 2), "cublas_tb_s": round(bytes_read / cublas_us / 1e6, 2),
                "triton_us": round(best[1], 2), "triton_tb_s": round(bytes_read / best[1] / 1e6, 2),
                "triton_tile": list(best[0])}  # fmt: skip
    return row


def run(tiny: bool) -> dict:
    device, dtype = ("cpu", torch.float32) if tiny else ("cuda", torch.bfloat16)
    gen = torch.Generator(device=device).manual_seed(0)
    result: dict = {"device": "cpu (interpreter)" if tiny else torch.cuda.get_device_name(), "cases": {}}
    for name, (n, k) in cases(tiny).items():
        case = "plain" if name.startswith("plain") else name
        copies = 1 if tiny or name == "plain_lm_head" else LAYERS  # one LM head: 1.2 GB, past the L2 anyway
        row = measure(case, n, k, copies, TINY_TILES if tiny else TILES, not tiny, device, dtype, gen)
        result["cases"][name] = row
        print(name, json.dumps(row), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tiny", action="store_true", help="small shapes on the CPU (TRITON_INTERPRET=1)")
    args = parser.parse_args()
    result = run(args.tiny)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_gemv.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
