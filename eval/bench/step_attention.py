"""Decode tokens/s of the CUDA-graph decode step under each form of its attention, one fresh process per form.

    python eval/bench/step_attention.py --out DIR                       # the default variants, batches 1 and 8
    python eval/bench/step_attention.py --out DIR --variants 0:16 2:16 2:128 --batches 1 8 16 32 64

A variant is ``parts:sdpa_from[:gemv[:block[:pdl[:prefetch]]]]``: below ``sdpa_from`` sequences the step
attention is the Triton kernel over ``parts`` cache chunks (``parts`` 0: written out), from ``sdpa_from`` on the SDPA
kernel (``speechkit.model.attention.STEP_KERNEL_PARTS`` and ``STEP_SDPA_FROM_BATCH``); ``gemv`` 0 turns off the batch-1
step's fused matrix-vector kernels (``speechkit.model.decoder.STEP_GEMV``, default on). Each variant runs in its own
process (its own compiled layer) on ``gpu.py``'s full-size random model: the step of a 30 s clip's prompt (486 cache
slots), 100 graph replays from the prompt's end as ``gpu.py`` counts decode tokens/s, best and median of 7 blocks
after one warm-up block. Variants run in the order given, then once more in the same order, so a drift of the
machine shows. Writes ``DIR/step_attention.json``. ``block``: cache slots per inner iteration of the Triton kernel
(``speechkit.model.decode_attention.BLOCK_SLOTS``; 0 or left out: the package's); ``pdl`` 0 / 1 launches the step's
Triton kernels plainly / as programmatic dependents (``decode_attention.PDL``), ``prefetch`` 0 / 1 turns off / on the
matrix-vector kernels' one-ahead weight loads (``decode_gemv.PREFETCH``); left out: the package's. ``--tiles
o=4,4096,8 ...`` replaces ``decode_gemv.tile``'s (rows, columns, warps) for the named products (qkv, o, gate_up,
down, head) in every variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BLOCKS = 8  # the first is a warm-up


def measure(parts: int, sdpa_from: int, gemv: int, block: int, pdl: int | None, prefetch: int | None,
            batches: list[int], tiles: dict[str, tuple[int, int, int]]) -> dict:  # fmt: skip
    """This process's decode tokens/s per batch with the attention variant set before the first compile."""
    from gpu import NEW_TOKENS, _decode_step, _our_model, _prompt  # eval/bench/gpu.py

    import speechkit.model.attention as attention
    import speechkit.model.decode_attention as decode_attention
    import speechkit.model.decode_gemv as decode_gemv
    import speechkit.model.decoder as decoder

    attention.STEP_KERNEL_PARTS, attention.STEP_SDPA_FROM_BATCH = parts, sdpa_from
    decoder.STEP_GEMV = bool(gemv)
    decode_attention.BLOCK_SLOTS = block or decode_attention.BLOCK_SLOTS
    decode_attention.PDL = decode_attention.PDL if pdl is None else bool(pdl)
    decode_gemv.PREFETCH = decode_gemv.PREFETCH if prefetch is None else bool(prefetch)
    package_tile = decode_gemv.tile

    def tile(rows_out: int, width: int, gated: bool) -> tuple[int, int, int]:
        name = "gate_up" if gated else "head" if rows_out > 65536 else "qkv" if rows_out > width else (
            "o" if rows_out == width else "down")  # fmt: skip
        return tiles.get(name) or package_tile(rows_out, width, gated)

    decode_gemv.tile = tile
    result: dict = {"parts": parts, "sdpa_from": sdpa_from, "gemv": gemv, "block": decode_attention.BLOCK_SLOTS,
                    "pdl": decode_attention.PDL, "prefetch": decode_gemv.PREFETCH, "tiles": tiles}  # fmt: skip
    with torch.inference_mode():
        model = _our_model()
        prompt_len = len(_prompt(375))  # a 30 s clip's audio tokens
        for batch in batches:
            t0 = time.perf_counter()
            step = _decode_step(model, batch, prompt_len)
            build_s = time.perf_counter() - t0
            rates = []
            for _ in range(BLOCKS):
                step.slot.fill_(prompt_len)
                step.position.fill_(prompt_len)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(NEW_TOKENS):
                    step()
                torch.cuda.synchronize()
                rates.append(NEW_TOKENS / (time.perf_counter() - t0))
            result[f"b{batch}"] = {"build_s": round(build_s, 1), "tokens_per_s_best": round(max(rates[1:]), 1),
                                   "tokens_per_s_median": round(statistics.median(rates[1:]), 1),
                                   "logits_head": [round(v, 3) for v in step.logits[0, :4].tolist()]}  # fmt: skip
            del step
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variants", nargs="+", default=["0:16", "1:16", "2:16", "4:16"],
                        help="parts:sdpa_from[:gemv[:block[:pdl[:prefetch]]]]")  # fmt: skip
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--tiles", nargs="*", default=[], help="name=rows,columns,warps")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: measure this variant, print its JSON
    args = parser.parse_args()
    if args.one:
        parts, sdpa_from, gemv, block, pdl, prefetch = (list(map(int, args.one.split(":"))) + [1, 0, None, None])[:6]
        tiles = {name: tuple(map(int, value.split(","))) for name, value in (t.split("=") for t in args.tiles)}
        print(json.dumps(measure(parts, sdpa_from, gemv, block, pdl, prefetch, args.batches, tiles)))
        return
    rows = []
    for variant in args.variants * 2:
        cmd = [sys.executable, __file__, "--one", variant, "--batches", *map(str, args.batches), "--tiles", *args.tiles]
        done = subprocess.run(cmd, capture_output=True, text=True)
        row = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else {
            "variant": variant, "error": done.stderr[-2000:]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
        (args.out / "step_attention.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
