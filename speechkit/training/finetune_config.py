"""Fine-tuning configuration: the ``finetune`` section of ``recipes/finetune_lora/config.yaml``.

The schedule, learning rate and trained groups are a :class:`StageConfig` (one speech stage) so the
trainer's parameter selection, optimizer and LR schedule are reused as they are; the stage's
``tasks`` weights are not used (every manifest row names its task), and ``eval_every: 0`` means
one dev evaluation at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speechkit.errors import ConfigError
from speechkit.training.config import StageConfig, apply_overrides, from_dict

FINETUNE_GROUPS = ("projector", "lora")  # the encoder and the decoder's base weights stay frozen


@dataclass(frozen=True)
class FinetuneConfig:
    """Global settings of a LoRA + projector fine-tuning run. ``patience``: stop after this many dev
    evaluations without a WER gain larger than ``min_delta`` points (0: never stop early)."""

    stage: StageConfig
    seed: int = 0
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16: frozen weights bf16, trained ones fp32 masters
    gradient_checkpointing: bool = True  # recompute each decoder layer in the backward pass
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    log_every: int = 10
    num_workers: int = 0  # batch-building processes (audio decoding, log-mel); 0: in the training process
    dev_rows: int = 200  # first rows of the dev manifest decoded for WER
    patience: int = 0
    min_delta: float = 0.0
    save_dtype: Literal["bfloat16", "float32"] = "bfloat16"  # exported weights

    def __post_init__(self) -> None:
        bad = [g for g in self.stage.trainable if g not in FINETUNE_GROUPS]
        if bad or self.stage.data != "speech" or not self.stage.lora:
            raise ConfigError(
                f"finetune.stage: trainable={list(self.stage.trainable)}, data={self.stage.data}, "
                f"lora={self.stage.lora}; fine-tuning trains {FINETUNE_GROUPS} of a speech stage with lora: true"
            )
        if self.stage.max_seconds or self.stage.init_feature_stats:
            raise ConfigError(
                f"finetune.stage: max_seconds={self.stage.max_seconds}, init_feature_stats="
                f"{self.stage.init_feature_stats}; fine-tuning runs by steps on a trained encoder: set 0 and false"
            )
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"finetune.precision={self.precision!r}: choose bf16 or fp32")
        if self.patience < 0 or self.dev_rows < 1:
            raise ConfigError(f"finetune: patience={self.patience}, dev_rows={self.dev_rows} out of range")


def load_finetune_config(path: str | Path, overrides: list[str] = ()) -> FinetuneConfig:
    """Parse the ``finetune`` section of a recipe file after ``key=value`` overrides (``finetune.seed=1``)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config not found") from None
    raw = apply_overrides(raw, list(overrides))
    if "finetune" not in raw:
        raise ConfigError(f"{path}: no 'finetune' section")
    return from_dict(FinetuneConfig, raw["finetune"], "finetune")
