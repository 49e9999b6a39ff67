"""The Triton CTC loss against ``F.ctc_loss`` on a GPU, side by side: forward + backward ms per batch.

    python eval/bench/ctc_loss_speed.py [--batch-seconds 200 20] [--labels 3000]

Batches like the demo recipe's CTC stage: clips of 2-10 s filling ``--batch-seconds``, 8x subsampled frames
upsampled 3x (``train.ctc_upsample``), ~15 character labels a second. Each implementation runs the same
batch; ``wall`` is host time for loss + backward with the device synchronised at the end (what a step pays
when nothing else overlaps), ``device`` the CUDA-event time of the same work.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from speechkit.training.ctc_loss import ctc_mean_loss

FRAMES_PER_SECOND = 100 / 8 * 3  # 10 ms features, 8x subsampling, 3x upsampling
LABELS_PER_SECOND = 15


def _batch(seconds: float, labels: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    durations = []
    while sum(durations) < seconds:
        durations.append(2 + 8 * float(torch.rand((), generator=gen)))
    frames = torch.tensor([math.ceil(d * FRAMES_PER_SECOND) for d in durations])
    target_lengths = torch.tensor([int(d * LABELS_PER_SECOND) for d in durations])
    logits = torch.randn(int(frames.max()), len(durations), labels, generator=gen, device="cpu")
    targets = torch.randint(1, labels, (int(target_lengths.sum()),), generator=gen)
    return logits.cuda().requires_grad_(), targets.cuda(), frames, target_lengths


def _step(batch: tuple[torch.Tensor, ...], use_triton: bool) -> None:
    logits, targets, frames, target_lengths = batch
    logits.grad = None
    ctc_mean_loss(logits.log_softmax(-1), targets, frames, target_lengths, 0, use_triton).backward()


def _time(fn, repeats: int) -> tuple[float, float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    walls, devices = [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) * 1e3)
        devices.append(start.elapsed_time(end))
    return statistics.median(walls), statistics.median(devices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-seconds", type=float, nargs="+", default=[200.0, 20.0])
    parser.add_argument("--labels", type=int, default=3000, help="CTC output size (blank 0)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for seconds in args.batch_seconds:
        batch = _batch(seconds, args.labels, gen)
        _, _, frames, target_lengths = batch
        torch_wall, torch_device = _time(lambda b=batch: _step(b, False), args.repeats)
        triton_wall, triton_device = _time(lambda b=batch: _step(b, True), args.repeats)
        rows.append({"batch_s": seconds, "rows": len(frames), "max_frames": int(frames.max()),
                     "max_labels": int(target_lengths.max()), "torch_wall_ms": round(torch_wall, 3),
                     "triton_wall_ms": round(triton_wall, 3), "torch_device_ms": round(torch_device, 3),
                     "triton_device_ms": round(triton_device, 3)})  # fmt: skip
        print(json.dumps(rows[-1]))
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
