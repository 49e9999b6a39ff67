"""Where the speech is in the open buffer: the engine's small injected dependency.

A detector maps a buffer of (N,) float32 samples at ``SAMPLE_RATE`` to sorted, non-overlapping
``SpeechSegment``\\ s in seconds from the buffer's start. ``VadDetector`` wraps
:func:`speechkit.audio.vad.detect_speech_samples`; tests inject the energy detector of
:mod:`speechkit.testing.streaming`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from speechkit.audio.vad import SpeechSegment, VadOptions, detect_speech_samples
from speechkit.audio.vad_frames import FeatureCache


class SpeechDetector(Protocol):
    """Speech regions of a buffer, in seconds from its first sample."""

    def __call__(self, samples: np.ndarray) -> list[SpeechSegment]: ...


class VadDetector:
    """The package's VAD (webrtcvad + music filter by default) run over the whole open buffer.

    The buffer is at most ``max_segment_s`` long and mostly what the last call saw: the music filter's
    voice features of each 32 ms window are cached (:class:`~speechkit.audio.vad_frames.FeatureCache`),
    so a call computes them only for the new audio and re-runs webrtcvad (a few milliseconds). Segments
    are never merged across a gap here (``max_merge_gap_s=0``): a gap is exactly what ends a streamed segment.
    """

    def __init__(self, options: VadOptions | None = None) -> None:
        self.options = replace(options or VadOptions(min_silence_s=0.3, pad_s=0.1), max_merge_gap_s=0.0)
        self._cache = FeatureCache()

    def __call__(self, samples: np.ndarray) -> list[SpeechSegment]:
        return detect_speech_samples(samples, self.options, self._cache)
