"""A batch that runs the device out of memory is decoded again in halves, and later batches keep the size that
fitted (CPU: the out-of-memory error is raised by a stand-in for the model's batch above a size)."""

from __future__ import annotations

import pytest
import torch

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.errors import DeviceMemoryError
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.testing.audio import speechlike
from speechkit.text.prompts import PromptSpec, Task


@pytest.fixture
def pipeline(tiny_checkpoint):
    return Pipeline.load(str(tiny_checkpoint), device="cpu", dtype="float32")


def _waves(n: int):
    return [load_audio(speechlike(0.6 + 0.3 * i, seed=i), sample_rate=SAMPLE_RATE) for i in range(n)]


def _fits(pipeline, monkeypatch, most: int) -> list[int]:
    """Batches above ``most`` clips raise the out-of-memory error; returns the sizes that were tried."""
    real, tried = pipeline._decode, []

    def decode(waves, *args):
        tried.append(len(waves))
        if len(waves) > most:
            torch.ones(4)  # a tensor alive in the failing frame, as a real attempt holds
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(waves, *args)

    monkeypatch.setattr(pipeline, "_decode", decode)
    return tried


def test_halves_until_it_fits_and_keeps_that_size(pipeline, monkeypatch):
    waves = _waves(7)
    expected = pipeline.run(waves, PromptSpec(Task.ASR), DecodeOptions(batch_size=8))
    tried = _fits(pipeline, monkeypatch, most=2)
    with pytest.warns(UserWarning) as caught:
        results = pipeline.run(waves, PromptSpec(Task.ASR), DecodeOptions(batch_size=8))
    assert [r.tokens for r in results] == [r.tokens for r in expected]
    assert tried == [7, 4, 2, 2, 3, 2, 1]  # 7 -> 4 + 3 -> (2 + 2) + (2 + 1)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "out of cpu memory decoding 7 clips at once: decoding at most 4 at a time from now on "
        "(pass --batch-size 4 to start there)",
        "out of cpu memory decoding 4 clips at once: decoding at most 2 at a time from now on "
        "(pass --batch-size 2 to start there)",
    ]
    assert pipeline.max_batch == 2
    tried.clear()
    pipeline.run(waves, PromptSpec(Task.ASR), DecodeOptions(batch_size=8, group_batches=2))  # no new warning
    assert tried == [2, 2, 2, 1]


def test_one_clip_that_does_not_fit_is_an_error_for_that_clip(pipeline, monkeypatch):
    _fits(pipeline, monkeypatch, most=0)
    errors = []
    with pytest.warns(UserWarning):
        results = pipeline.run(_waves(2), PromptSpec(Task.ASR), DecodeOptions(batch_size=2),
                               on_error=lambda i, err: errors.append((i, str(err))))  # fmt: skip
    assert results == [None, None]
    assert sorted(i for i, _ in errors) == [0, 1]
    assert all("out of cpu memory decoding this clip alone; free memory on the device, or run with --device cpu"
               in message for _, message in errors)  # fmt: skip
    with pytest.raises(DeviceMemoryError, match="out of cpu memory decoding this clip alone"):
        pipeline.run(_waves(1), PromptSpec(Task.ASR))
