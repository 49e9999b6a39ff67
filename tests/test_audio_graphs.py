"""The audio tower from length-bucketed CUDA graphs gives the eager tower's speech embeddings."""

from __future__ import annotations

import pytest
import torch

from speechkit.audio import LogMelFrontend
from speechkit.inference.audio_graphs import FRAMES_STEP, AudioGraphs
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike


def _features(seconds: list[float], device: str = "cpu"):
    feats = LogMelFrontend(device)([speechlike(s, seed=i) for i, s in enumerate(seconds)])
    return feats.values, (feats.lengths if len(seconds) > 1 else None)


def _assert_same_tokens(got, want) -> None:
    assert got.lengths.tolist() == want.lengths.tolist() and got.hidden.shape == want.hidden.shape
    for row, n in enumerate(want.lengths.tolist()):
        torch.testing.assert_close(got.hidden[row, :n], want.hidden[row, :n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seconds", [[1.3], [3.0, 1.2, 2.1]])
def test_padded_buckets_give_the_eager_embeddings(loaded, seconds):
    """What the graphs rely on, eagerly on the CPU: zero frames up to the bucket, masked, change no real token."""
    features, lengths = _features(seconds)
    assert features.shape[1] % FRAMES_STEP, "the input must actually be padded"
    graphs = AudioGraphs(loaded.model.audio, use_graph=False)
    with torch.inference_mode():
        _assert_same_tokens(graphs(features, lengths), loaded.model.audio(features, lengths))


def test_inputs_past_one_attention_window_take_the_eager_tower(loaded):
    features, lengths = _features([41.0])  # 513 tokens: two windows, whose split padding would move
    graphs = AudioGraphs(loaded.model.audio, use_graph=False)
    with torch.inference_mode():
        got, want = graphs(features, lengths), loaded.model.audio(features, lengths)
    assert torch.equal(got.hidden, want.hidden) and torch.equal(got.lengths, want.lengths)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_replays_follow_the_eager_tower(tiny_checkpoint):
    """fp32 on the GPU: each bucket captured once, replayed with new inputs, gives the eager embeddings."""
    loaded = load_speech_model(tiny_checkpoint, device=torch.device("cuda"), dtype=torch.float32, lora="merged")
    graphs = AudioGraphs(loaded.model.audio)
    for seconds in ([1.3], [1.9], [3.0, 1.2, 2.1], [2.9, 2.5, 0.7], [7.0]):
        features, lengths = _features(seconds, "cuda")
        with torch.inference_mode():
            _assert_same_tokens(graphs(features, lengths), loaded.model.audio(features, lengths))
    assert len(graphs) == 3  # (1, 256) twice, (3, 512) twice, (1, 768)
