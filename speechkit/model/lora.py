"""LoRA linear layer that keeps the base parameter name (reference section D).

``LoRALinear.weight`` is the base weight, so a checkpoint without adapters loads into it as into
``nn.Linear``; the adapter lives in ``lora_a`` / ``lora_b``. Unmerged evaluation reproduces the
official PEFT numerics exactly (base matmul plus scaled low-rank path, both in the compute dtype).
Merging folds the adapter into ``weight`` in fp32 and drops it; a merged layer cannot switch LoRA
off again, and there is no unmerge: subtracting the delta from a bf16 weight does not give the
base weight back, so the way back is reloading the checkpoint.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechkit.errors import ConfigError

LoraMode = Literal["unmerged", "merged"]


def merge_lora(weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: float) -> Tensor:
    """W + scale * B @ A, computed in fp32 and cast to ``weight.dtype``.

    Shapes: weight (out, in), lora_a (r, in), lora_b (out, r). Merging in fp32 and rounding once
    keeps the merged bf16 weight as close as possible to unmerged evaluation (reference H.12).
    """
    delta = (lora_b.float() @ lora_a.float()) * scale
    return (weight.float() + delta).to(weight.dtype)


class LoRALinear(nn.Module):
    """y = x W^T + scale * (x A^T) B^T, without bias.

    Attributes: ``weight`` (out, in), ``lora_a`` (r, in), ``lora_b`` (out, r), ``scale`` (alpha / r),
    ``enabled`` (whether the adapter is applied), ``mode`` (``"unmerged"`` or ``"merged"``).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.lora_a: nn.Parameter | None = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b: nn.Parameter | None = nn.Parameter(torch.empty(out_features, rank))
        self.mode: LoraMode = "unmerged"
        self._enabled = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's init for both W and A, and B = 0 (PEFT's default): a fresh adapter is a no-op.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.lora_a is not None and self.lora_b is not None:
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            nn.init.zeros_(self.lora_b)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if self.mode == "merged" and not value:
            raise ConfigError(
                "LoRA is merged into the base weights and cannot be switched off; reload the checkpoint"
            )
        self._enabled = value

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        out = F.linear(x, self.weight)
        if self.mode == "unmerged" and self._enabled:
            # PEFT order: B(A(x)) then * scale, in the compute dtype, added to the base output.
            out = out + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale
        return out

    def dense_weight(self) -> Tensor | None:
        """The (out, in) weight when the layer is a product by it alone (merged, or the adapter off), else None."""
        return self.weight if self.mode == "merged" or not self._enabled else None

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold the adapter into ``weight`` (fp32 merge, one rounding) and drop ``lora_a``/``lora_b``."""
        if self.mode == "merged":
            return
        if not self._enabled:
            raise ConfigError("cannot merge a disabled LoRA adapter; enable it first or drop it")
        merged = merge_lora(self.weight, self.lora_a, self.lora_b, self.scale)
        self.weight = nn.Parameter(merged, requires_grad=self.weight.requires_grad)
        self.lora_a = None
        self.lora_b = None
        self.mode = "merged"

    def extra_repr(self) -> str:
        rank = None if self.lora_a is None else self.lora_a.shape[0]
        return f"in={self.in_features}, out={self.out_features}, {rank=}, scale={self.scale}, {self.mode}"
