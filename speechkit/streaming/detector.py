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


class SpeechDetector(Protocol):
    """Speech regions of a buffer, in seconds from its first sample."""

    def __call__(self, samples: np.ndarray) -> list[SpeechSegment]: ...


class VadDetector:
    """The package's VAD (webrtcvad + music filter by default) run over the whole open buffer.

    The buffer is at most ``max_segment_s`` long, so re-scoring it costs a few milliseconds. Segments are
    never merged across a gap here (``max_merge_gap_s=0``): a gap is exactly what ends a streamed segment.
    """

    def __init__(self, options: VadOptions | None = None) -> None:
        self.options = replace(options or VadOptions(min_silence_s=0.3, pad_s=0.1), max_merge_gap_s=0.0)

    def __call__(self, samples: np.ndarray) -> list[SpeechSegment]:
        return detect_speech_samples(samples, self.options)
