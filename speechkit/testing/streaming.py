"""Deterministic stand-ins for the streaming engine's dependencies: a scripted model step, an energy
detector and audio that matches a script. They make policy and protocol tests exact and fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from speechkit.audio import SAMPLE_RATE
from speechkit.audio.vad import SpeechSegment
from speechkit.streaming.records import Word
from speechkit.streaming.step import StepRequest, StepResult
from speechkit.text.prompts import Task

_FRAME = SAMPLE_RATE // 100  # 10 ms


class ScriptedStep:
    """A model step that "hears" a script: the words lying wholly inside a request's audio.

    A word cut off by the end of the audio comes out as a guess, its first letters plus ``~`` (one letter
    per 0.1 s heard), so consecutive hypotheses disagree on it the way a real model's do. Translation
    prompts return the heard words upper-cased (CoT: ``transcript <sep> TRANSLATION``). Every batch is
    recorded in ``calls``.
    """

    def __init__(self, script: Sequence[Word]) -> None:
        self.script = list(script)
        self.calls: list[list[StepRequest]] = []

    def __call__(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        self.calls.append(list(requests))
        return [self._one(r) for r in requests]

    def _one(self, request: StepRequest) -> StepResult:
        heard = []
        for word in self.script:
            if word.start >= request.start - 1e-6 and word.end <= request.end + 1e-6:
                heard.append(word.text)
            elif word.start >= request.start - 1e-6 and word.start < request.end < word.end:
                heard.append(word.text[: max(1, int((request.end - word.start) * 10))] + "~")
        transcript = " ".join(heard)
        if request.spec.task is Task.AST:
            return StepResult(transcript.upper())
        if request.spec.task is Task.AST_COT:
            return StepResult(transcript.upper(), transcript, transcript.upper())
        return StepResult(transcript)


def scripted_audio(script: Sequence[Word], duration_s: float, amplitude: float = 0.3) -> np.ndarray:
    """(N,) float32 at ``SAMPLE_RATE``: a 200 Hz tone over each word of ``script``, silence elsewhere."""
    out = np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)
    for word in script:
        a, b = round(word.start * SAMPLE_RATE), round(word.end * SAMPLE_RATE)
        t = np.arange(b - a) / SAMPLE_RATE
        out[a:b] = amplitude * np.sin(2 * np.pi * 200 * t)
    return out


class EnergyDetector:
    """Speech = 10 ms frames louder than ``threshold_db``; gaps shorter than ``min_gap_s`` are filled."""

    def __init__(self, threshold_db: float = -30.0, min_gap_s: float = 0.2) -> None:
        self.threshold_db = threshold_db
        self.min_gap_s = min_gap_s

    def __call__(self, samples: np.ndarray) -> list[SpeechSegment]:
        n = len(samples) // _FRAME
        frames = samples[: n * _FRAME].reshape(n, _FRAME).astype(np.float64)
        loud = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20) > self.threshold_db
        edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
        regions: list[list[int]] = []
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            if regions and (a - regions[-1][1]) / 100 < self.min_gap_s:
                regions[-1][1] = b
            else:
                regions.append([a, b])
        return [SpeechSegment(a / 100, b / 100) for a, b in regions]
