"""Front-end throughput: speechkit's log-mel vs the transformers extractor, side by side.

Prints x-realtime (audio seconds per compute second, median of repeated runs) for 1 s, 30 s and
10 min inputs at batch 1 and 16, and the ratio ours / transformers: the median, over rounds that run
each extractor in turn, of their time ratio within the round. Two kinds of round: one call of each
(``ratio 1 call``: each call starts with caches filled by the other extractor's work, as a front end
does between model steps) and blocks of calls lasting about ``--block-ms`` each (``ratio block``:
sustained throughput over a stream of inputs, caches warm; the x-realtime columns are from these).
Both get the same waveforms and the same thread count; run it on an otherwise idle machine.

    python eval/bench/frontend.py [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def _paired_times(fns, min_seconds: float, calls: list[int], min_rounds: int = 5) -> list[list[float]]:
    """Wall seconds per call of each function in ``fns``, run ``calls[i]`` times in a row, in turn, round
    after round, for at least ``min_seconds``: the functions share every stretch of the machine's state
    (frequency, neighbours), so the ratio of their times in one round is not skewed by a drift between two
    separate timing loops."""
    for fn in fns:  # warm-up
        fn()
    rounds: list[list[float]] = []
    start = time.perf_counter()
    while len(rounds) < min_rounds or time.perf_counter() - start < min_seconds:
        row = []
        for fn, n in zip(fns, calls, strict=True):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            row.append((time.perf_counter() - t0) / n)
        rounds.append(row)
    return rounds


def _block_calls(fn, block_s: float) -> int:
    """How many calls of ``fn`` take about ``block_s`` seconds (at least one)."""
    t0 = time.perf_counter()
    fn()
    return max(1, round(block_s / max(time.perf_counter() - t0, 1e-9)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing per case and kind of round")
    parser.add_argument("--block-ms", type=float, default=50.0, help="length of a block of calls")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import Phi4MultimodalFeatureExtractor

    from speechkit.audio.features import LogMelFrontend, speechlib_mel_bank

    theirs = Phi4MultimodalFeatureExtractor()
    theirs.mel_filters = speechlib_mel_bank().T.astype(np.float64)  # same bank, same work
    ours = LogMelFrontend(args.device)
    rng = np.random.default_rng(0)
    name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    )
    print(f"device: {args.device} ({name}), threads: {args.threads}, torch {torch.__version__}")
    print(f"{'input':>8} {'batch':>5} {'transformers xRT':>17} {'speechkit xRT':>14} {'ratio block':>12} "
          f"{'ratio 1 call':>13}")  # fmt: skip
    for seconds, batch in ((1, 1), (1, 16), (30, 1), (30, 16), (600, 1), (600, 16)):
        waves = [rng.uniform(-0.5, 0.5, 16000 * seconds).astype(np.float32) for _ in range(batch)]
        audio = seconds * batch
        fns = [lambda w=waves: theirs(w, sampling_rate=16000, return_tensors="pt", device=args.device),
               lambda w=waves: ours(w)]  # fmt: skip
        blocks = _paired_times(fns, args.seconds, [_block_calls(fn, args.block_ms / 1000) for fn in fns])
        singles = _paired_times(fns, args.seconds, [1, 1])
        t_theirs = statistics.median(r[0] for r in blocks)
        t_ours = statistics.median(r[1] for r in blocks)
        block_ratio = statistics.median(r[0] / r[1] for r in blocks)
        single_ratio = statistics.median(r[0] / r[1] for r in singles)
        print(f"{seconds:>7}s {batch:>5} {audio / t_theirs:>17.0f} {audio / t_ours:>14.0f} {block_ratio:>12.2f} "
              f"{single_ratio:>13.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
