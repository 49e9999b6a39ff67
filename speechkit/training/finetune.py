"""Fine-tune the speech LoRA and projector of an official-layout checkpoint, on 1 to N processes.

Frozen weights (encoder, decoder base, embeddings) stay in the compute dtype (bf16: no fp32 copy of
the 3.8 B frozen parameters); only the trained parameters are fp32 masters, cast by autocast in the
forward pass. Under ``torchrun`` each rank takes every world-th batch of one length-bucketed plan and
``DistributedDataParallel`` averages the gradients; rank 0 alone writes checkpoints.

A checkpoint (``run_dir/checkpoints/step-N``) holds only what changes: ``trainable.safetensors``
(fp32 masters and AdamW moments) and ``state.json`` (position, early-stopping state, history), so
resuming reloads the base checkpoint and then these, and continues bit-identically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute

from speechkit.audio import LogMelFrontend
from speechkit.errors import CheckpointError
from speechkit.model.decoder import Decoder
from speechkit.model.encoder import EncoderOutput
from speechkit.model.loader import LoadedModel, load_speech_model
from speechkit.model.speech_model import SpeechModel
from speechkit.scoring import score_records
from speechkit.text.prompts import Task
from speechkit.training.batches import IGNORE, Batch, BatchSource, speech_batch, worker_init
from speechkit.training.checkpoint import load_optimizer_state
from speechkit.training.evaluate import decode_records
from speechkit.training.finetune_config import FinetuneConfig
from speechkit.training.finetune_data import Example, shard_plan
from speechkit.training.optim import build_optimizer, lr_at, select_trainable

log = logging.getLogger(__name__)
STATE_FORMAT = 1
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Progress:
    """Where a run stands: optimizer steps done, the data position (epoch, next batch of this rank's
    plan) and the early-stopping state (best dev WER, its step, evaluations since it improved)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_wer: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (1 process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1


def load_for_finetuning(checkpoint: str | Path, cfg: FinetuneConfig, device: torch.device) -> LoadedModel:
    """Load an official-layout checkpoint with its speech LoRA unmerged; trained groups become fp32.

    Frozen weights are loaded in bf16 (``precision: bf16``) or fp32 and never get gradients.
    """
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    loaded = load_speech_model(checkpoint, device=device, dtype=dtype, lora="unmerged")
    make_trainable_(loaded.model, cfg)
    return loaded


def make_trainable_(model: SpeechModel, cfg: FinetuneConfig) -> dict[str, nn.Parameter]:
    """Switch ``model`` (LoRA unmerged) to training: the stage's groups get gradients and become fp32
    masters, the rest stays frozen in its dtype. Returns the trained parameters by name."""
    params = select_trainable(model, cfg.stage)
    for param in params.values():
        param.data = param.data.float()  # fp32 masters for the trained parameters only
    model.train()
    return params


def decoder_hidden(decoder: Decoder, embeds: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """The decoder's cache-free causal forward (B, L, hidden) -> (B, L, hidden), each layer
    optionally recomputed in the backward pass (activation memory: one layer's, not all 32)."""
    length = embeds.shape[1]
    positions = torch.arange(length, device=embeds.device).expand(embeds.shape[0], -1)
    rope = decoder.rope.tables(positions, decoder.regime_for(length), embeds.dtype)
    h = embeds
    for layer in decoder.layers:
        if checkpointing and torch.is_grad_enabled():
            h = recompute(layer, h, rope, None, None, None, use_reentrant=False)
        else:
            h = layer(h, rope, None, None, None)
    return decoder.norm(h)


class LossModule(nn.Module):
    """Mean next-token cross-entropy over a batch's answer tokens (the module DDP wraps)."""

    def __init__(self, model: SpeechModel, cfg: FinetuneConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, batch: Batch) -> torch.Tensor:
        model, device = self.model, batch.input_ids.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            with torch.no_grad():  # frozen encoder: no activations kept
                enc = model.audio.encoder(batch.features, batch.feature_lengths)
            audio = EncoderOutput(model.audio.projector(enc.hidden), enc.lengths)
            embeds = model.embed_inputs(batch.input_ids, audio)
            hidden = decoder_hidden(model.decoder, embeds, self.cfg.gradient_checkpointing)
            keep = batch.labels != IGNORE
            # the LM head only where there is a loss: (tokens, vocab) instead of (B, L, vocab)
            logits = model.decoder.logits(hidden[keep])
        return F.cross_entropy(logits.float(), batch.labels[keep])


def finetune(
    cfg: FinetuneConfig,
    loaded: LoadedModel,
    train: list[Example],
    dev: list[Example],
    run_dir: Path,
    device: torch.device,
    ranks: Ranks = Ranks(),
    *,
    resume: bool = True,
    stop_at_step: int | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> Progress:
    """Train until ``stage.max_steps``, early stopping, or ``stop_at_step`` (which saves a checkpoint
    there and returns, as a kill right after a save leaves the run). Returns the final progress."""
    model, stage = loaded.model, cfg.stage
    params = select_trainable(model, stage)
    names = list(params)
    optimizer = build_optimizer(params, stage, cfg.betas, cfg.eps)
    progress, history = Progress(), []
    found = latest_checkpoint(run_dir) if resume else None
    if found is not None:
        progress, history = restore(found, params, optimizer, names)
        log.info("resuming from %s (step %d)", found, progress.step)
    loss_module = step_module(model, cfg, params, device, ranks)
    frontend = LogMelFrontend("cpu")
    durations = [e.row.duration for e in train]

    def build(indices: list[int]) -> Batch:  # runs in the DataLoader's worker processes
        chosen = [train[i] for i in indices]
        return speech_batch([e.row for e in chosen], [e.task for e in chosen], loaded.tokenizer, frontend)

    def record(entry: dict) -> None:
        history.append(entry)
        if on_record is not None and ranks.rank == 0:
            on_record(entry)

    while progress.step < stage.max_steps and not progress.stopped_early:
        plan = shard_plan(durations, stage.batch_seconds, cfg.seed, progress.epoch, ranks.rank, ranks.world)
        source = BatchSource(plan[progress.batch :], build)
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, shuffle=False, num_workers=cfg.num_workers, worker_init_fn=worker_init,
            pin_memory=device.type == "cuda", prefetch_factor=4 if cfg.num_workers else None,
        )  # fmt: skip
        for batch in loader:
            out = train_step(cfg, loss_module, optimizer, params, batch.to(device), progress.step)
            progress = dataclasses.replace(progress, step=progress.step + 1, batch=progress.batch + 1)
            done = progress.step >= stage.max_steps
            if progress.step % cfg.log_every == 0 or done or progress.step == 1:
                record({"step": progress.step, "loss": _mean_over_ranks(out.loss, ranks), "lr": out.lr,
                        "grad_norm": float(out.grad_norm)})  # fmt: skip
            if dev and (done or (stage.eval_every and progress.step % stage.eval_every == 0)):
                progress = _evaluate(cfg, loaded, dev, progress, params, run_dir, ranks, record)
            stop = stop_at_step is not None and progress.step >= stop_at_step
            end = done or stop or progress.stopped_early
            if end or (stage.save_every and progress.step % stage.save_every == 0):
                save(run_dir, params, optimizer, names, progress, history, ranks)
            if end:
                return progress
        progress = dataclasses.replace(progress, epoch=progress.epoch + 1, batch=0)
    return progress


def step_module(model: SpeechModel, cfg: FinetuneConfig, params: dict[str, nn.Parameter], device: torch.device,
                ranks: Ranks) -> nn.Module:  # fmt: skip
    """The module :func:`train_step` calls: the :class:`LossModule`, under ``DistributedDataParallel``
    over the trained parameters alone when there are several ranks (``dist`` already initialised)."""
    loss_module: nn.Module = LossModule(model, cfg)
    if ranks.world > 1:
        frozen = [n for n, _ in loss_module.named_parameters() if n.removeprefix("model.") not in params]
        frozen += [n for n, _ in loss_module.named_buffers()]
        # every rank loaded the same checkpoint: do not broadcast the frozen weights
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(loss_module, frozen)
        ids = [device.index] if device.type == "cuda" else None
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    return loss_module


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports: this rank's loss (detached, on the device), the total
    gradient norm before clipping (after DDP's averaging) and the learning rate used."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float


def train_step(cfg: FinetuneConfig, loss_module: nn.Module, optimizer: torch.optim.Optimizer,
               params: dict[str, nn.Parameter], batch: Batch, step: int) -> StepResult:  # fmt: skip
    """Optimizer step ``step`` (0-based) on one batch already on the device: the schedule's learning
    rate, forward, backward (DDP all-reduces the gradients), clipping at ``grad_clip``, AdamW."""
    lr = lr_at(cfg.stage, step, 0.0)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = loss_module(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
    optimizer.step()
    return StepResult(loss.detach(), norm, lr)


def _mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> float:
    if ranks.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ranks.world
    return float(value)


def dev_wer(cfg: FinetuneConfig, loaded: LoadedModel, dev: list[Example]) -> float:
    """Corpus WER (%, ``paper`` normalisation) of greedy transcripts of the ASR dev rows."""
    model = loaded.model
    rows = [e.row for e in dev if e.task is Task.ASR][: cfg.dev_rows]
    was_training = model.training
    model.eval()
    try:
        device = model.decoder.embed_tokens.weight.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            records = decode_records(model, loaded.tokenizer, rows, Task.ASR)
    finally:
        model.train(was_training)
    return round(score_records(records, protocol="paper").score, 3)


def _evaluate(cfg, loaded, dev, progress: Progress, params, run_dir: Path, ranks: Ranks, record) -> Progress:
    # every rank decodes the same dev rows (small by design), so all agree on early stopping
    wer = dev_wer(cfg, loaded, dev)
    record({"step": progress.step, "dev_wer": wer})
    if progress.best_wer is None or wer < progress.best_wer - cfg.min_delta:
        if ranks.rank == 0:
            _write_tensors(run_dir / "best" / TRAINABLE_FILE, {f"param.{k}": v for k, v in params.items()})
            _write_json(run_dir / "best" / STATE_FILE, {"step": progress.step, "dev_wer": wer})
        return dataclasses.replace(progress, best_wer=wer, best_step=progress.step, bad_evals=0)
    bad = progress.bad_evals + 1
    stopped = cfg.patience > 0 and bad >= cfg.patience
    if stopped:
        log.info("early stop at step %d: best dev WER %.2f at step %d", progress.step, progress.best_wer,
                 progress.best_step)  # fmt: skip
    return dataclasses.replace(progress, bad_evals=bad, stopped_early=stopped)


def save(run_dir: Path, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer, names: list[str],
         progress: Progress, history: list[dict], ranks: Ranks) -> None:  # fmt: skip
    """Rank 0 writes ``checkpoints/step-N`` (fp32 masters, AdamW moments, position); all ranks wait."""
    if ranks.rank == 0:
        out = run_dir / "checkpoints" / f"step-{progress.step:07d}"
        tensors = {f"param.{k}": v for k, v in params.items()}
        for name, param in zip(names, [p for g in optimizer.param_groups for p in g["params"]], strict=True):
            for key, value in optimizer.state.get(param, {}).items():
                tensors[f"optim.{name}.{key}"] = value
        _write_tensors(out / TRAINABLE_FILE, tensors)
        _write_json(out / STATE_FILE, {"format_version": STATE_FORMAT, "progress": dataclasses.asdict(progress),
                                       "history": history})  # fmt: skip
    if ranks.world > 1:
        dist.barrier()


def restore(ckpt: Path, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
            names: list[str]) -> tuple[Progress, list[dict]]:  # fmt: skip
    """Put a checkpoint's masters and moments back; returns its progress and history."""
    info = json.loads((ckpt / STATE_FILE).read_text("utf-8"))
    if info.get("format_version") != STATE_FORMAT:
        raise CheckpointError(f"{ckpt / STATE_FILE}: format_version {info.get('format_version')}, "
                              f"expected {STATE_FORMAT}")  # fmt: skip
    tensors = load_trainable(ckpt / TRAINABLE_FILE, params)
    load_optimizer_state(tensors, optimizer, names)
    return Progress(**info["progress"]), info["history"]


def load_trainable(path: Path, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Copy ``param.*`` tensors of ``path`` into ``params`` (every one must be there); returns all tensors."""
    tensors = load_file(str(path))
    saved = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    if set(saved) != set(params):
        missing = sorted(set(params) - set(saved))[:3]
        raise CheckpointError(f"{path}: trained parameters do not match this config (missing {missing}, "
                              f"unexpected {sorted(set(saved) - set(params))[:3]})")  # fmt: skip
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
    return tensors


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``run_dir/checkpoints``, or None."""
    found = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
