"""Encoder + projector vs the transformers port (tiny config, fp32), and batch semantics."""

from __future__ import annotations

import pytest
import torch

from speechkit.model.config import ENCODER_WINDOW_TOKENS, SpeechModelConfig
from speechkit.model.encoder import BIAS_ALIGNMENT
from speechkit.model.loader import load_audio_tower
from speechkit.testing.compare import relative_error
from speechkit.testing.reference import port_audio_embedding, port_speech_embeddings


@pytest.fixture(scope="module")
def tower(tiny_checkpoint):
    return load_audio_tower(tiny_checkpoint, dtype=torch.float32)


@pytest.fixture(scope="module")
def port(tiny_checkpoint, tower):
    config = SpeechModelConfig.from_file(tiny_checkpoint / "config.json")
    return port_audio_embedding(config, tower.state_dict())


def _features(frames: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 8.0 + 3.0 * torch.randn(frames, 80, generator=gen)  # log-mel-like level and spread


@pytest.mark.parametrize("frames", [7, 300, 3999, 4000, 4500, 8123])
def test_single_matches_port(tower, port, frames):
    x = _features(frames, seed=frames)[None]
    with torch.no_grad():
        ours = tower(x).hidden
        ref = port_speech_embeddings(port, x)
    assert ours.shape == ref.shape == (1, -(-frames // 8), tower.projector.speech.down.out_features)
    assert relative_error(ours, ref) <= 1e-5


def test_padded_batch_equals_one_by_one(tower):
    # short (< one window), exactly one window, and two multi-window items of different lengths
    frames = [300, 4000, 4500, 8123, 57]
    items = [_features(n, seed=100 + n) for n in frames]
    batch = torch.zeros(len(items), max(frames), 80)
    for i, x in enumerate(items):
        batch[i, : len(x)] = x
    with torch.no_grad():
        out = tower(batch, torch.tensor(frames))
        assert torch.isfinite(out.hidden).all()
        for i, x in enumerate(items):
            single = tower(x[None]).hidden[0]
            assert int(out.lengths[i]) == single.shape[0]
            assert relative_error(out.hidden[i, : single.shape[0]], single) <= 1e-5


def test_batch_without_lengths_is_the_single_path(tower):
    x = torch.stack([_features(4500, 1), _features(4500, 2)])
    with torch.no_grad():
        out = tower(x)
        assert relative_error(out.hidden[1], tower(x[1:]).hidden[0]) <= 1e-6
    assert out.lengths.tolist() == [563, 563]


def test_window_constant_is_the_released_one():
    assert ENCODER_WINDOW_TOKENS == 500  # 40 s of audio; both reference implementations hard-code it


def test_only_audio_tensors_are_loaded(tower):
    names = set(tower.state_dict())
    assert not any("lora" in n or n.startswith("decoder") for n in names)
    assert "projector.vision_speech.up.weight" in names  # both projectors, as released


@pytest.mark.parametrize("frames", [300, 2999, 4500])  # 38 keys, 375 (a 30 s clip), 500-token windows
def test_blocks_get_an_aligned_bias(tower, frames):
    # SDPA's mem-efficient kernel copies a bias whose strides are not multiples of 16 bytes, in every block
    seen = []
    hook = tower.encoder.encoders[0].self_attn.register_forward_pre_hook(lambda _, args: seen.append(args[1]))
    try:
        with torch.no_grad():
            tower(torch.stack([_features(frames, 1), _features(frames, 2)]), torch.tensor([frames, frames - 40]))
    finally:
        hook.remove()
    (bias,) = seen
    assert bias.stride(-1) == 1 and all(s % BIAS_ALIGNMENT == 0 for s in bias.stride()[:-1])
