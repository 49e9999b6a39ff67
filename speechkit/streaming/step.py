"""The model step: decode a batch of audio stretches with a prompt each. The policy never sees the model.

A step receives ``StepRequest``\\ s (samples plus where they sit in the stream) and returns one
``StepResult`` per request, in order. ``PipelineStep`` runs the speech model; tests use the scripted
step of :mod:`speechkit.testing.streaming`. Requests from several streams may share one call (the
server's dynamic batcher), so a step must not keep per-stream state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from speechkit.audio import SAMPLE_RATE, Waveform
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.text.prompts import PromptSpec, Task


@dataclass(frozen=True, eq=False)
class StepRequest:
    """Audio to decode: (N,) float32 ``samples`` at ``SAMPLE_RATE`` that start ``start`` seconds into the stream."""

    samples: np.ndarray
    start: float
    spec: PromptSpec

    @property
    def end(self) -> float:
        """Stream time (s) of the last sample."""
        return self.start + len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class StepResult:
    """A request's output: ``text`` is the task's answer; CoT requests also fill ``transcript``/``translation``."""

    text: str
    transcript: str | None = None
    translation: str | None = None


class ModelStep(Protocol):
    """Anything that decodes a batch of requests, one result each, in order."""

    def __call__(self, requests: Sequence[StepRequest]) -> list[StepResult]: ...


class PipelineStep:
    """The speech model as a step: requests with the same prompt are decoded in one batch."""

    def __init__(self, pipeline: Pipeline, options: DecodeOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or DecodeOptions()

    def __call__(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        results: list[StepResult | None] = [None] * len(requests)
        by_spec: dict[PromptSpec, list[int]] = {}
        for i, request in enumerate(requests):
            by_spec.setdefault(request.spec, []).append(i)
        for spec, idx in by_spec.items():
            waves = [Waveform(requests[i].samples, SAMPLE_RATE, f"<stream {requests[i].start:.2f}s>") for i in idx]
            for i, result in zip(idx, self.pipeline.run(waves, spec, self.options), strict=True):
                if spec.task is Task.AST_COT:
                    results[i] = StepResult(result.text, result.transcript, result.translation)
                else:
                    results[i] = StepResult(result.text)
        return results  # type: ignore[return-value]  # every slot is filled above
