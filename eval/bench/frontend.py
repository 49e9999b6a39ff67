"""Front-end throughput: speechkit's log-mel vs the transformers extractor, side by side.

Prints x-realtime (audio seconds per compute second, median of repeated runs) for 1 s, 30 s and
10 min inputs at batch 1 and 16, and the ratio ours / transformers. Both get the same waveforms
and the same thread count; run it on an otherwise idle machine.

    python eval/bench/frontend.py [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def _time(fn, min_seconds: float, min_runs: int = 3) -> float:
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    print(f"{'input':>8} {'batch':>5} {'transformers xRT':>17} {'speechkit xRT':>14} {'ratio':>6}")
    for seconds, batch in ((1, 1), (1, 16), (30, 1), (30, 16), (600, 1), (600, 16)):
        waves = [rng.uniform(-0.5, 0.5, 16000 * seconds).astype(np.float32) for _ in range(batch)]
        audio = seconds * batch
        t_theirs = _time(
            lambda w=waves: theirs(w, sampling_rate=16000, return_tensors="pt", device=args.device),
            args.seconds,
        )
        t_ours = _time(lambda w=waves: ours(w), args.seconds)
        print(
            f"{seconds:>7}s {batch:>5} {audio / t_theirs:>17.0f} {audio / t_ours:>14.0f} {t_theirs / t_ours:>6.2f}"
        )


if __name__ == "__main__":
    main()
