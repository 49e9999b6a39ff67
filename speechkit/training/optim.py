"""Which parameters a stage trains, its optimizer, SpecAugment masks and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from speechkit.training.config import SpecAugmentConfig, StageConfig


def group_of(name: str) -> str | None:
    """The trainable group of a parameter name (see ``TRAINABLE_GROUPS``), or None (never trained).

    The vision-speech projector is kept only so the checkpoint has the released layout; no stage trains it.
    """
    if name.endswith((".lora_a", ".lora_b")):
        return "lora"
    if name.startswith("audio.encoder."):
        return "encoder"
    if name.startswith("audio.projector.speech."):
        return "projector"
    if name.startswith("decoder."):
        return "decoder"
    return None


def select_trainable(model: nn.Module, stage: StageConfig) -> dict[str, nn.Parameter]:
    """Set ``requires_grad`` for the stage's groups only, and switch its LoRA on or off.

    Returns the trainable parameters by name (the optimizer's order, stable across runs).
    """
    chosen = {}
    for name, param in model.named_parameters():
        param.requires_grad_(group_of(name) in stage.trainable)
        if param.requires_grad:
            chosen[name] = param
    model.decoder.set_lora_enabled(stage.lora)
    return chosen


def build_optimizer(params: dict[str, nn.Parameter], stage: StageConfig, betas, eps,
                    capturable: bool = False) -> torch.optim.AdamW:  # fmt: skip
    """AdamW with weight decay on matrices only (norm gains, biases and 1-D statistics are not decayed).

    ``capturable`` (CUDA only): for steps inside a CUDA graph; the learning rate of every group is then one
    device tensor, to be set with ``fill_``.
    """
    decay = [p for p in params.values() if p.ndim >= 2]
    plain = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": stage.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    # one fused kernel on the GPU (a per-parameter loop cost 22 ms of a 120 ms demo step); CPU keeps the loop
    fused = all(p.is_cuda for p in params.values())
    if capturable and not fused:
        raise ValueError("a capturable optimizer needs every parameter on a CUDA device")
    lr = torch.tensor(stage.lr, device=next(iter(params.values())).device) if capturable else stage.lr
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused, capturable=capturable)


def lr_at(stage: StageConfig, step: int, elapsed_s: float) -> float:
    """Learning rate for ``step`` (0-based) of a stage: linear warm-up, then cosine to ``min_lr_ratio``.

    Progress is the larger of the step and wall-clock fractions, so a stage cut by its clock still
    ends its decay; a stage with no clock (``max_seconds`` 0) follows steps alone and resumes exactly.
    """
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = (step - stage.warmup_steps) / max(1, stage.max_steps - stage.warmup_steps)
    if stage.max_seconds > 0:
        progress = max(progress, elapsed_s / stage.max_seconds)
    progress = min(1.0, progress)
    floor = stage.min_lr_ratio
    return stage.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig, seed: int) -> torch.Tensor:
    """Zero random mel bands and time spans of (B, T, n_mels) features (values after the log).

    Per utterance: ``freq_masks`` bands of up to ``freq_width`` channels and ``time_masks`` spans of up
    to ``min(time_width, max_time_ratio x length)`` frames inside its valid frames. Widths and starts
    are drawn on the CPU from ``seed`` alone, so a batch gets the same masks on any device and after a
    resume. Masked values are set to 0 before the encoder's global normalisation, the value of padding
    frames.
    """
    gen = torch.Generator().manual_seed(seed)
    batch, frames, mels = features.shape
    lengths = lengths.cpu().long()

    def spans(count: int, limit: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
        # (B, size) bool: union of `count` spans per row, widths uniform in [0, limit], inside [0, extent)
        width = (torch.rand(batch, count, generator=gen) * (limit[:, None] + 1)).long()
        start = (torch.rand(batch, count, generator=gen) * (extent[:, None] - width).clamp_min(1)).long()
        pos = torch.arange(size)
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    freq = spans(cfg.freq_masks, torch.full((batch,), cfg.freq_width), torch.full((batch,), mels), mels)
    limit = torch.minimum(torch.full((batch,), cfg.time_width), (cfg.max_time_ratio * lengths).long())
    time = spans(cfg.time_masks, limit, lengths, frames)
    keep = ~(freq[:, None, :] | time[:, :, None])
    return features * keep.to(features.device, non_blocking=True)
