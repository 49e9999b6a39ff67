"""Build speechkit models on the meta device and fill them from official-layout checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from speechkit.model.audio_tower import AudioTower
from speechkit.model.checkpoint import load_official_tensors, shapes_of, strip_prefix
from speechkit.model.config import SpeechModelConfig
from speechkit.model.hub import resolve_checkpoint


def load_audio_tower(
    model: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> AudioTower:
    """The encoder and projectors of a checkpoint (hub id or local directory), in eval mode.

    Only the audio tensors are read; decoder and vision tensors stay on disk.
    """
    root = resolve_checkpoint(model)
    config = SpeechModelConfig.from_file(root / "config.json")
    with torch.device("meta"):
        tower = AudioTower(config)
    expected = shapes_of(tower, prefix="audio.")
    state = load_official_tensors(
        root, expected, dtype=dtype, device=device, wanted=lambda name: name.startswith("audio.")
    )
    tower.load_state_dict(strip_prefix(state, "audio."), strict=True, assign=True)
    return tower.eval()
