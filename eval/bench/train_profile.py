"""Where a demo-recipe training step goes: wall ms per phase and the top kernels, per speech stage.

    python eval/bench/train_profile.py --tokenizer .demo/prepared/tokenizer --out DIR   # on the GPU
    python eval/bench/train_profile.py --tokenizer DIR --out DIR --device cpu --batch-seconds 20

The model is the synthetic-demo recipe's (``recipes/synthetic_demo/config.yaml``), randomly initialised;
the batch is ``--batch-seconds`` of speech-like noise in clips of ``--clip-s`` seconds with random
transcripts of 3.5 tokens a second (CTC labels in the recipe's units), waveforms featurised on the device
as the recipe does. For the ``ctc`` stage (encoder only) and the ``asr`` stage (whole model, CE + CTC)
it times, after warm-up steps, each phase with the device synchronised (features, SpecAugment,
forward + loss, backward, clip + AdamW), then profiles whole steps and writes the top device kernels
and the top host ops to
``DIR/train_profile.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from speechkit.audio import SAMPLE_RATE, LogMelFrontend
from speechkit.audio.features import num_audio_tokens
from speechkit.testing.audio import speechlike
from speechkit.text.prompts import PromptSpec, Task, encode_prompt
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import IGNORE, Batch, with_features
from speechkit.training.config import load_train_config
from speechkit.training.ctc import CtcHead, CtcUnits
from speechkit.training.model_init import build_model, official_config
from speechkit.training.optim import build_optimizer, select_trainable, spec_augment
from speechkit.training.trainer import _loss

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "synthetic_demo" / "config.yaml"


def _batch(tokenizer: Tokenizer, vocab: int, units: CtcUnits, seconds: float, clip_s: float, seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    n = max(1, int(seconds // clip_s))
    waves = torch.stack([torch.from_numpy(speechlike(clip_s, seed=seed + i)) for i in range(n)])
    samples = waves.shape[1]
    prompt = encode_prompt(tokenizer, PromptSpec(Task.ASR).text(), num_audio_tokens(samples, SAMPLE_RATE))
    answer_len = max(2, int(3.5 * clip_s))
    low = 16  # past the special ids
    seqs, labels = [], []
    for _ in range(n):
        answer = torch.randint(low, vocab, (answer_len,), generator=gen).tolist() + [tokenizer.special.end]
        seqs.append(prompt + answer)
        target = [IGNORE] * len(seqs[-1])
        target[len(prompt) - 1 : len(seqs[-1]) - 1] = answer
        labels.append(target)
    if units.kind == "tokens":
        ctc = [s[len(prompt) : -1] for s in seqs]
    else:  # 14 characters a second, as a sentence read at 180 words a minute
        ctc = [torch.randint(1, units.size, (max(2, int(14 * clip_s)),), generator=gen).tolist() for _ in range(n)]
    return Batch(torch.tensor(seqs), torch.tensor(labels), None, None, torch.ones(n, dtype=torch.bool),
                 tokenizer.special.endoftext, waves.float(), torch.full((n,), samples),
                 torch.tensor([i for c in ctc for i in c]), torch.tensor([len(c) for c in ctc]))  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_stage(name: str, recipe, model, head, batch: Batch, device: torch.device, steps: int, top: int) -> dict:
    stage = next(s for s in recipe.train.stages if s.name == name)
    params = select_trainable(model, stage) | (head.trainable() if stage.ctc_weight else {})
    optimizer = build_optimizer(params, stage, recipe.train.betas, recipe.train.eps)
    frontend = LogMelFrontend(device)
    phases = {"features": [], "specaugment": [], "forward": [], "backward": [], "optimizer": []}

    def step(timed: bool) -> None:
        marks = [time.perf_counter()]

        def mark() -> None:
            if timed:
                _sync(device)
                marks.append(time.perf_counter())

        full = with_features(batch.to(device), frontend)
        mark()
        spec_augment(full.features, full.feature_lengths.cpu(), recipe.train.specaugment, 0)
        mark()
        loss = _loss(model, head, full, recipe.train, stage, seed=0)  # applies SpecAugment again, as training does
        mark()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark()
        torch.nn.utils.clip_grad_norm_(list(params.values()), recipe.train.grad_clip)
        optimizer.step()
        mark()
        if timed:
            for key, a, b in zip(phases, marks[:-1], marks[1:], strict=True):
                phases[key].append((b - a) * 1e3)

    for _ in range(3):
        step(False)
    _sync(device)
    walls = []
    for _ in range(steps):
        start = time.perf_counter()
        step(False)
        _sync(device)
        walls.append((time.perf_counter() - start) * 1e3)
    for _ in range(steps):
        step(True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step(False)
        _sync(device)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    kernels = sorted(events, key=lambda e: getattr(e, sort.replace("cuda", "device"), 0) or 0, reverse=True)

    def device_us(e) -> float:
        return float(getattr(e, "self_device_time_total", 0) or 0) / 2

    return {
        "stage": name,
        "step_ms_median": sorted(walls)[len(walls) // 2],
        "phase_ms_median": {k: round(sorted(v)[len(v) // 2], 2) for k, v in phases.items()},
        "device_kernels_per_step": sum(e.count for e in events if device_us(e) > 0) / 2,
        "device_busy_ms_per_step": round(sum(device_us(e) for e in events) / 1e3, 2),
        "top_device": [(e.key[:90], e.count // 2, round(device_us(e))) for e in kernels[:top] if device_us(e) > 0],
        "top_host": [(e.key[:90], e.count // 2, round(e.self_cpu_time_total / 2))
                     for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="the recipe's prepared tokenizer folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-seconds", type=float, default=400.0)
    parser.add_argument("--clip-s", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = load_train_config(RECIPE, [])
    tokenizer = Tokenizer.from_dir(args.tokenizer)
    vocab = len(json.loads((args.tokenizer / "tokenizer.json").read_text("utf-8"))["model"]["vocab"])
    model = build_model(official_config(recipe.model, tokenizer, vocab), tokenizer, recipe.model.init_std, 0)
    model = model.to(device).train()
    if recipe.train.ctc_units == "tokens":
        units = CtcUnits.tokens(tokenizer, vocab)
    else:  # the demo's label count (its train readings have 164 characters), without reading them
        units = CtcUnits.characters(["".join(chr(0x4E00 + i) for i in range(164))])
    head = CtcHead(recipe.model.encoder_dim, units, recipe.train.ctc_upsample, 0).to(device)
    batch = _batch(tokenizer, vocab, units, args.batch_seconds, args.clip_s, seed=0)
    results = [run_stage(name, recipe, model, head, batch, device, args.steps, args.top) for name in ("ctc", "asr")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_profile.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = []
    for r in results:
        busy = f"{r['device_kernels_per_step']:.0f} kernels / {r['device_busy_ms_per_step']} ms busy"
        lines.append(f"== {r['stage']}: step {r['step_ms_median']:.1f} ms, phases {r['phase_ms_median']}, {busy}")
        lines += [f"  dev  {us:>9} us  x{n:<5} {k}" for k, n, us in r["top_device"]]
        lines += [f"  host {us:>9} us  x{n:<5} {k}" for k, n, us in r["top_host"][:12]]
    (args.out / "train_profile.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
