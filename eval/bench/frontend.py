"""Front-end throughput: speechkit's log-mel vs the transformers extractor, side by side.

Prints x-realtime (audio seconds per compute second, median of repeated runs) for 1 s, 30 s and
10 min inputs at batch 1 and 16, and the ratio ours / transformers: the median, over rounds that call
each extractor once in turn, of their time ratio within the round. Both get the same waveforms and the
same thread count; run it on an otherwise idle machine.

    python eval/bench/frontend.py [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def _paired_times(fns, min_seconds: float, min_rounds: int = 5) -> list[list[float]]:
    """Wall seconds of each function in ``fns``, called in turn, round after round, for at least
    ``min_seconds``: the functions share every stretch of the machine's state (frequency, neighbours), so
    the ratio of their times in one round is not skewed by a drift between two separate timing loops."""
    for fn in fns:  # warm-up
        fn()
    rounds: list[list[float]] = []
    start = time.perf_counter()
    while len(rounds) < min_rounds or time.perf_counter() - start < min_seconds:
        row = []
        for fn in fns:
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            row.append(time.perf_counter() - t0)
        rounds.append(row)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing per case")
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
    print(f"{'input':>8} {'batch':>5} {'transformers xRT':>17} {'speechkit xRT':>14} {'ratio':>6} {'rounds':>7}")
    for seconds, batch in ((1, 1), (1, 16), (30, 1), (30, 16), (600, 1), (600, 16)):
        waves = [rng.uniform(-0.5, 0.5, 16000 * seconds).astype(np.float32) for _ in range(batch)]
        audio = seconds * batch
        rounds = _paired_times(
            [lambda w=waves: theirs(w, sampling_rate=16000, return_tensors="pt", device=args.device),
             lambda w=waves: ours(w)],
            args.seconds,
        )  # fmt: skip
        t_theirs = statistics.median(r[0] for r in rounds)
        t_ours = statistics.median(r[1] for r in rounds)
        ratio = statistics.median(r[0] / r[1] for r in rounds)
        print(
            f"{seconds:>7}s {batch:>5} {audio / t_theirs:>17.0f} {audio / t_ours:>14.0f} {ratio:>6.2f} {len(rounds):>7}"
        )

if __name__ == "__main__":
    main()
