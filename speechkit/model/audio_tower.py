"""Encoder + projector: log-mel features in, decoder-width audio embeddings out."""

from __future__ import annotations

import torch
from torch import nn

from speechkit.model.config import SpeechModelConfig
from speechkit.model.encoder import AudioEncoder, EncoderOutput
from speechkit.model.projector import AudioProjector


class AudioTower(nn.Module):
    def __init__(self, config: SpeechModelConfig) -> None:
        super().__init__()
        self.encoder = AudioEncoder(config.encoder)
        self.projector = AudioProjector(config.projector)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """(B, T, n_mels) log-mel and (B,) valid frames -> (B, ceil(T/8), hidden) speech embeddings."""
        out = self.encoder(features, lengths)
        return EncoderOutput(self.projector(out.hidden), out.lengths)
