"""Where a real training-loop step goes: a recipe stage on real synthesized data, phase by phase.

    python eval/bench/train_loop_profile.py --prepared PREPARED --audio AUDIO --stage asr --out DIR  # on the GPU
    ... --stage ctc --compile        # the model torch.compiled first
    ... --workers 0 --steps 10 train.precision=fp32     # a CPU check (recipe overrides last)
    ... --stage ctc --graphs         # then eager vs CUDA-graph steps, side by side on the same batches

``train_profile.py`` times a fixed batch; the loop itself was slower (run 9's cached asr stage: 25-170 ms a
step; the cause was cuDNN attention planning every new shape, session 5: now ~19-27 ms on an H100). This
runs the trainer's own stage data (``--stage`` of ``recipes/synthetic_demo/config.yaml``, a randomly
initialised model, the training audio in memory, encoder outputs cached if the stage caches them) with
each ``--workers`` count in turn, and times every step's phases with the device synchronised: waiting for
the batch, finishing it on the device, forward + loss, backward, clip + AdamW. Then it profiles ten steps
(top host ops and kernels). Results go to ``DIR/train_loop_profile.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import AudioStore, read_rows
from speechkit.training.config import load_train_config
from speechkit.training.ctc import CtcHead
from speechkit.training.encoder_cache import EncoderCache
from speechkit.training.graphs import GraphedEncoder, GraphedSteps
from speechkit.training.model_init import build_model, official_config
from speechkit.training.optim import build_optimizer, select_trainable
from speechkit.training.trainer import DataPaths, TrainSetup, _loss, _StageData, _step, ctc_units

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "synthetic_demo" / "config.yaml"
PHASES = ("wait", "finish", "forward", "backward", "optimizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared folder (tokenizer/)")
    parser.add_argument("--audio", type=Path, required=True, help="synthesized folder (train.jsonl)")
    parser.add_argument("--stage", default="asr", help="a speech stage of the recipe")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per workers count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 14])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile encoder, projector, decoder (dynamic shapes); medians absorb compilation")
    parser.add_argument("--graphs", action="store_true",
                        help="also time eager and CUDA-graph steps side by side, unsynchronised, as the trainer runs "
                             "them (GraphedSteps for cached stages, GraphedEncoder for encoder stages)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.precision=fp32 on a CPU")
    args = parser.parse_args()
    recipe = load_train_config(RECIPE, args.overrides)
    stage = next(s for s in recipe.train.stages if s.name == args.stage)
    tokenizer = Tokenizer.from_dir(args.prepared / "tokenizer")
    vocab = json.loads((args.prepared / "tokenizer" / "tokenizer.json").read_text("utf-8"))["model"]["vocab"]
    official = official_config(recipe.model, tokenizer, len(vocab))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(official, tokenizer, recipe.model.init_std, recipe.train.seed).to(device).train()
    if args.compile:
        for part in (model.audio.encoder, model.audio.projector, model.decoder):
            part.compile(dynamic=True)
    setup = TrainSetup(model, official, tokenizer, args.prepared / "tokenizer", device)
    paths = DataPaths(train=args.audio / "train.jsonl")
    rows = read_rows(paths.train, True)
    start = time.perf_counter()
    store = AudioStore(rows, threads=8)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report: dict = {"device": name, "stage": stage.name, "rows": len(rows), "compiled": args.compile,
                    "store_s": round(time.perf_counter() - start, 1)}  # fmt: skip
    cache = None
    if stage.cache_encoder:
        start = time.perf_counter()
        cache = EncoderCache(model, rows, store, device, recipe.train.precision)
        report["cache_s"] = round(time.perf_counter() - start, 1)
    params = select_trainable(model, stage)
    head = None
    if stage.ctc_weight:
        units = ctc_units(recipe.train, tokenizer, model.config.decoder.vocab_size, paths)
        head = CtcHead(model.config.encoder.attention_dim, units, recipe.train.ctc_upsample, 0).to(device).train()
        params |= head.trainable()
    optimizer = build_optimizer(params, stage, recipe.train.betas, recipe.train.eps)
    data = _StageData(stage, setup, paths, 0, store, recipe.train.features_on_device,
                      head.units if head is not None else None, cache)  # fmt: skip
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(batch) -> dict[str, float]:
        marks = [time.perf_counter()]
        batch = data.finish(batch, device)
        sync()
        marks.append(time.perf_counter())
        loss = _loss(model, head, batch, recipe.train, stage, 0, cache)
        sync()
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(list(params.values()), recipe.train.grad_clip)
        optimizer.step()
        sync()
        marks.append(time.perf_counter())
        return {name: 1000 * (b - a) for name, a, b in zip(PHASES[1:], marks[:-1], marks[1:], strict=True)}

    for epoch, workers in enumerate(args.workers):
        times: dict[str, list[float]] = {name: [] for name in PHASES}
        arrived = time.perf_counter()
        for i, batch in enumerate(data.loader(epoch, 0, workers)):
            times["wait"].append(1000 * (time.perf_counter() - arrived))
            for name, ms in step(batch).items():
                times[name].append(ms)
            arrived = time.perf_counter()
            if i + 1 == args.steps:
                break
        report[f"workers_{workers}"] = {name: {"mean_ms": round(statistics.mean(v), 2),
                                               "median_ms": round(statistics.median(v), 2)}
                                        for name, v in times.items()}  # fmt: skip
        print(workers, "workers:", report[f"workers_{workers}"], flush=True)
    if args.graphs and device.type == "cuda":
        report["loop"] = _eager_vs_graphed(data, model, head, params, recipe.train, stage, cache, device, args)
        print("loop:", report["loop"], flush=True)
    batches = iter(data.loader(len(args.workers), 0, 0))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(10):
            step(next(batches))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_loop_profile.json").write_text(json.dumps(report, indent=1) + "\n")
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=30)
    (args.out / "train_loop_profile.txt").write_text(json.dumps(report, indent=1) + "\n\n" + table + "\n")
    print(table)


def _eager_vs_graphed(data, model, head, params, cfg, stage, cache, device, args) -> dict:
    """ms a step over ``args.steps`` steps of one epoch, eager then graphed (twice: the first pass captures
    each new shape), the device synchronised only at the ends, as in the trainer's loop."""
    workers = 0 if cache is not None else args.workers[-1]
    eager_opt = build_optimizer(params, stage, cfg.betas, cfg.eps)
    if cache is not None:
        graph_opt = build_optimizer(params, stage, cfg.betas, cfg.eps, capturable=True)
        graphed = GraphedSteps(lambda b: _loss(model, head, b, cfg, stage, 0, cache), list(params.values()),
                               graph_opt, cfg.grad_clip, cache.pad_index)  # fmt: skip
        buckets = graphed.buckets

        def graph_step(batch):
            return graphed(batch, stage.lr)
    else:
        encoder = GraphedEncoder(model.audio.encoder)
        buckets = encoder.buckets

        def graph_step(batch):
            return _step(model, head, data.finish(batch, device), eager_opt, params, cfg, stage, stage.lr, 0, None,
                         encoder)  # fmt: skip

    def eager_step(batch):
        return _step(model, head, data.finish(batch, device), eager_opt, params, cfg, stage, stage.lr, 0, cache)

    def timed(step) -> float:
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        for batch in data.loader(100, 0, workers):  # the same batches for every variant
            step(batch)
            n += 1
            if n == args.steps:
                break
        torch.cuda.synchronize()
        return round(1000 * (time.perf_counter() - start) / n, 2)

    out = {"eager_ms": timed(eager_step), "graphed_first_pass_ms": timed(graph_step)}
    out["graphed_ms"] = timed(graph_step)
    out["buckets"] = len(buckets)
    out["speedup"] = round(out["eager_ms"] / out["graphed_ms"], 2)
    return out


if __name__ == "__main__":
    main()
