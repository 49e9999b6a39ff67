"""Build speechkit models on the meta device and fill them from official-layout checkpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from speechkit.errors import ConfigError
from speechkit.model.audio_tower import AudioTower
from speechkit.model.checkpoint import load_official_tensors, shapes_of, strip_prefix
from speechkit.model.config import SpeechModelConfig
from speechkit.model.hub import resolve_checkpoint
from speechkit.model.speech_model import SpeechModel
from speechkit.text.tokenizer import Tokenizer

LoraMode = Literal["merged", "unmerged"]


@contextmanager
def _on_meta() -> Iterator[None]:
    """Modules built inside get meta-device parameters, which the checkpoint's tensors then replace, and skip
    ``nn.init.normal_`` (the embeddings' initialiser): on meta tensors it runs torch's Python reference
    kernel, whose first call imports ``torch._dynamo``, 3 s of the 5 s that transcribing the example with the
    demo model took on a CPU, where nothing else needs it."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            yield
    finally:
        nn.init.normal_ = normal


def load_audio_tower(
    model: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> AudioTower:
    """The encoder and projectors of a checkpoint (hub id or local directory), in eval mode.

    Only the audio tensors are read; decoder and vision tensors stay on disk.
    """
    root = resolve_checkpoint(model)
    config = SpeechModelConfig.from_file(root / "config.json")
    with _on_meta():
        tower = AudioTower(config)
    expected = shapes_of(tower, prefix="audio.")
    state = load_official_tensors(
        root, expected, dtype=dtype, device=device, wanted=lambda name: name.startswith("audio.")
    )
    tower.load_state_dict(strip_prefix(state, "audio."), strict=True, assign=True)
    return tower.eval()


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_speech_model` returns: the model and what describes it."""

    model: SpeechModel
    tokenizer: Tokenizer
    config: SpeechModelConfig
    root: Path
    lora: LoraMode
    load_seconds: float


def load_speech_model(
    model: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    lora: LoraMode = "merged",
) -> LoadedModel:
    """Load the speech branch (never the vision tower or the vision LoRA) in eval mode.

    Args:
        model: hub id (downloaded once into the Hugging Face cache) or a local directory in the
            official layout.
        device, dtype: where and in what the weights live.
        lora: ``merged`` folds the speech LoRA into the base weights at load (fp32 merge, then
            cast; no run-time cost; text-only requests are impossible); ``unmerged`` keeps it
            switchable, exact official numerics, and allows text-only requests with LoRA off.
    """
    if lora not in ("merged", "unmerged"):
        raise ConfigError(f"lora={lora!r}: choose 'merged' or 'unmerged'")
    start = time.perf_counter()
    root = resolve_checkpoint(model)
    config = SpeechModelConfig.from_file(root / "config.json")
    if config.lora_merged and lora == "unmerged":
        raise ConfigError(f"{root}: a merged export (speech LoRA folded into the weights) cannot load with "
                          "lora='unmerged'; load it with lora='merged' or use the unmerged checkpoint")  # fmt: skip
    tokenizer = Tokenizer.from_dir(root)
    with _on_meta():
        speech = SpeechModel(config, tokenizer.special.audio)
    state = load_official_tensors(root, shapes_of(speech), dtype=dtype, device=device)
    speech.load_state_dict(state, strict=True, assign=True)
    del state
    if lora == "merged" and config.speech_lora is not None:
        speech.decoder.merge_lora_()
    return LoadedModel(speech.eval(), tokenizer, config, root, lora, time.perf_counter() - start)
