"""Audio projectors: encoder width -> decoder width (reference C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechkit.model.config import ProjectorConfig


class ProjectorMLP(nn.Module):
    """Linear -> exact (erf) GELU -> Linear."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.input_dim, config.output_dim)
        self.down = nn.Linear(config.output_dim, config.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class AudioProjector(nn.Module):
    """The two projectors of the checkpoint: ``speech`` for audio-only requests, ``vision_speech``
    for image+audio requests (kept so the checkpoint loads whole; speechkit runs audio only)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.speech = ProjectorMLP(config)
        self.vision_speech = ProjectorMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, input_dim) encoder tokens -> (B, L, output_dim) decoder embeddings (speech mode)."""
        return self.speech(x)
