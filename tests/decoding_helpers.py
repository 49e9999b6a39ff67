"""The tiny model loaded for decoding tests, and prompts with their encoded clips (the decoding paths' inputs)."""

from __future__ import annotations

import pytest
import torch

from speechkit.audio import LogMelFrontend
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike
from speechkit.text.prompts import PromptSpec, Task, encode_prompt


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    """The tiny checkpoint in fp32, LoRA merged, on the CPU."""
    return load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="merged")


def prompted_clips(loaded, seconds: list[float], task: Task = Task.ASR):
    """Prompts for ``task`` (translation into French) over speech-like clips of ``seconds``, and the clips'
    encoder output on the model's device."""
    feats = LogMelFrontend()([speechlike(s, seed=i) for i, s in enumerate(seconds)])
    device = loaded.model.decoder.embed_tokens.weight.device
    with torch.no_grad():
        audio = loaded.model.audio(feats.values.to(device), feats.lengths.to(device))
    text = PromptSpec(task, language="fr" if task is not Task.ASR else None).text()
    return [encode_prompt(loaded.tokenizer, text, int(n)) for n in audio.lengths], audio
