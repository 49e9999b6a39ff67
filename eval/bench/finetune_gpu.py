"""Fine-tuning memory and speed (issue 9's GPU acceptance): the full-size random model with the real
rank-320 speech LoRA trains 20 steps at batch 8 x 30 s per GPU through the recipe's own step.

    python eval/bench/finetune_gpu.py --out DIR                                # 1 GPU: DIR/finetune-world1.json
    torchrun --standalone --nproc_per_node 2 eval/bench/finetune_gpu.py --out DIR \\
        --single DIR/finetune-world1.json                                      # 2 GPUs (DDP), scaling vs 1
    python eval/bench/finetune_gpu.py --tiny --out DIR                         # CPU dry run (tiny, fp32; gloo)

Real: the released shapes (LoRA rank 320), ``recipes/finetune_lora/config.yaml`` (bf16 frozen weights,
fp32 masters for LoRA + projector, gradient checkpointing, AdamW, clipping, LR schedule), the ASR prompt
with the released special ids, the batch builder (``speech_batch``) and the step (``train_step``, DDP
as ``finetune`` wraps it). Synthetic: random weights (in memory, no checkpoint read), speech-like
noise as audio, random English words of about 100 tokens (the test tokenizer) as targets, and one
batch per rank built once and reused, so the step time excludes data loading (the recipe overlaps it
in DataLoader workers). Step times exclude the first ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from speechkit.audio import LogMelFrontend
from speechkit.testing.audio import speechlike, write_audio
from speechkit.testing.checkpoint import random_speech_model, released_config, tiny_config
from speechkit.testing.tokenizer import write_tiny_tokenizer
from speechkit.text.prompts import Task
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import IGNORE, Batch, Row, speech_batch
from speechkit.training.finetune import Ranks, make_trainable_, step_module, train_step
from speechkit.training.finetune_config import FinetuneConfig, load_finetune_config
from speechkit.training.optim import build_optimizer

RECIPE = Path(__file__).resolve().parents[2] / "recipes/finetune_lora/config.yaml"
WORDS = "the a of to and speech model audio word river garden morning light turn left right stop go".split()

COPIED = ("lora_rank", "trainable_params", "frozen_params", "seq_len", "answer_tokens", "build_s", "step_s", "losses",
          "trained_params_moved")  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """Per-rank batch: ``batch`` clips of ``seconds`` with ``answer_tokens`` target tokens each."""

    batch: int
    seconds: float
    answer_tokens: int


def _answer(tokenizer: Tokenizer, tokens: int, seed: int) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words))) < tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def build_batch(shape: Shape, rank: int, work: Path) -> tuple[Batch, Tokenizer]:
    """This rank's batch through the recipe's builder: wav files, rows, ``speech_batch``."""
    tokenizer = Tokenizer.from_dir(write_tiny_tokenizer(work))
    rows = []
    for i in range(shape.batch):
        seed = rank * shape.batch + i
        audio = write_audio(work / f"clip{seed}.wav", speechlike(shape.seconds, seed=seed))
        text = _answer(tokenizer, shape.answer_tokens, seed)
        rows.append(Row(f"clip{seed}", audio, shape.seconds, "en", None, text, None))
    batch = speech_batch(rows, [Task.ASR] * len(rows), tokenizer, LogMelFrontend("cpu"))
    return batch, tokenizer


def _checksum(params: dict[str, torch.nn.Parameter]) -> float:
    return float(sum(p.detach().double().sum() for p in params.values()))


def run(cfg: FinetuneConfig, shape: Shape, tiny: bool, steps: int, warmup: int, ranks: Ranks,
        device: torch.device) -> dict:  # fmt: skip
    """Build, train ``steps`` steps, and return this rank's measurements."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        batch, tokenizer = build_batch(shape, ranks.rank, Path(work))
    official = tiny_config() if tiny else released_config()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    model = random_speech_model(official, tokenizer.special.audio, device=device, dtype=dtype, seed=0)
    params = make_trainable_(model, cfg)
    module = step_module(model, cfg, params, device, ranks)
    optimizer = build_optimizer(params, cfg.stage, cfg.betas, cfg.eps)
    batch = batch.to(device)
    before = _checksum(params)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    build_s = time.perf_counter() - t0
    times, losses = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        out = train_step(cfg, module, optimizer, params, batch, step)
        losses.append(float(out.loss))  # waits for the step (and on CUDA for its kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    timed = times[warmup:]
    result = {
        "rank": ranks.rank,
        "build_s": round(build_s, 1),
        "step_s": [round(t, 4) for t in times],
        "step_mean_s": statistics.fmean(timed),
        "step_median_s": statistics.median(timed),
        "losses": [round(x, 4) for x in losses],
        "trainable_checksum": _checksum(params),
        "trained_params_moved": _checksum(params) != before,
        "peak_host_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "seq_len": int(batch.input_ids.shape[1]),
        "answer_tokens": int((batch.labels != IGNORE).sum()) // shape.batch,
        "trainable_params": sum(p.numel() for p in params.values()),
        "frozen_params": sum(p.numel() for n, p in model.named_parameters() if n not in params),
        "lora_rank": model.decoder.layers[0].self_attn.qkv_proj.lora_a.shape[0],
    }
    if device.type == "cuda":
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 1e9, 2)
    return result


def summarize(per_rank: list[dict], cfg: FinetuneConfig, shape: Shape, tiny: bool, device: torch.device,
              single: dict | None) -> dict:  # fmt: skip
    """One record for the job: rank 0's details, the slowest rank's step, global throughput, scaling."""
    world, first = len(per_rank), per_rank[0]
    mean_s = max(r["step_mean_s"] for r in per_rank)  # DDP steps in lockstep: the slowest rank sets the pace
    audio_per_s = world * shape.batch * shape.seconds / mean_s
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": _model_name(tiny),
        "world": world,
        "per_gpu_batch": shape.batch,
        "clip_s": shape.seconds,
        "precision": cfg.precision,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "data": f"speech-like noise, ~{shape.answer_tokens}-token random-word targets, one batch per rank reused",
        **{k: first[k] for k in COPIED},
        "step_mean_s": round(mean_s, 4),
        "step_median_s": round(max(r["step_median_s"] for r in per_rank), 4),
        "audio_s_per_s": round(audio_per_s, 1),
        "tokens_per_s": round(world * shape.batch * first["seq_len"] / mean_s, 0),
        "ranks_in_sync": len({r["trainable_checksum"] for r in per_rank}) == 1,
        "peak_host_rss_gb": max(r["peak_host_rss_gb"] for r in per_rank),
    }
    if "peak_allocated_gb" in first:
        out["peak_allocated_gb"] = max(r["peak_allocated_gb"] for r in per_rank)
        out["peak_reserved_gb"] = max(r["peak_reserved_gb"] for r in per_rank)
    if single is not None:
        out["single"] = {k: single[k] for k in ("device", "audio_s_per_s", "step_mean_s")}
        out["scaling"] = round(audio_per_s / single["audio_s_per_s"], 3)
        out["scaling_efficiency"] = round(out["scaling"] / world, 3)
    out["summary"] = _line(out)
    return out


def _line(r: dict) -> str:
    memory = (f"peak {r['peak_allocated_gb']} GB allocated / {r['peak_reserved_gb']} GB reserved per GPU"
              if "peak_allocated_gb" in r else f"host RSS {r['peak_host_rss_gb']} GB")  # fmt: skip
    line = (f"finetune {r['device']} x{r['world']}: {r['per_gpu_batch']} x {r['clip_s']:g} s per process, "
            f"rank {r['lora_rank']}, {r['precision']}: step mean {r['step_mean_s']:.3f} s / median "
            f"{r['step_median_s']:.3f} s, {r['audio_s_per_s']} audio s/s, {memory}")  # fmt: skip
    if "scaling" in r:
        mismatch = "" if r["single"]["device"] == r["device"] else f" (1-process run on {r['single']['device']}!)"
        line += f"; {r['scaling']:.2f}x vs 1 process ({100 * r['scaling_efficiency']:.0f} % efficiency){mismatch}"
    return line


def _model_name(tiny: bool) -> str:
    return "tiny, random weights" if tiny else "full-size (released shapes), random weights"


def _read_single(path: Path, shape: Shape, tiny: bool) -> dict:
    single = json.loads(path.read_text("utf-8"))
    want = (1, shape.batch, shape.seconds, _model_name(tiny))
    got = (single["world"], single["per_gpu_batch"], single["clip_s"], single["model"])
    if got != want:
        raise SystemExit(f"{path}: (world, batch, clip_s, model) = {got}, expected {want} for a scaling baseline")
    return single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for finetune[-tiny]-worldN.{json,txt}")
    parser.add_argument("--single", type=Path, help="a 1-process JSON of this script: report the scaling vs it")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch (CPU dry run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the step times")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    shape = Shape(2, 4.0, 20) if args.tiny else Shape(8, 30.0, 100)
    ranks = Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if ranks.world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    single = _read_single(args.single, shape, args.tiny) if args.single else None
    # --tiny runs fp32: CPUs without bf16 matrix units run bf16 matmuls ~10x slower (the bf16 path is
    # tested on CPU by tests/test_finetune.py); the GPU run keeps the recipe's bf16
    cfg = load_finetune_config(RECIPE, ["finetune.precision=fp32"] if args.tiny else [])
    torch.manual_seed(cfg.seed)
    mine = run(cfg, shape, args.tiny, args.steps, args.warmup, ranks, device)
    per_rank = [mine]
    if ranks.world > 1:
        per_rank = [None] * ranks.world
        dist.all_gather_object(per_rank, mine)
        dist.destroy_process_group()
    if ranks.rank == 0:
        result = summarize(per_rank, cfg, shape, args.tiny, device, single)
        stem = f"finetune{'-tiny' if args.tiny else ''}-world{ranks.world}"
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", "utf-8")
        (args.out / f"{stem}.txt").write_text(result["summary"] + "\n", "utf-8")
        print(result["summary"])


if __name__ == "__main__":
    main()
