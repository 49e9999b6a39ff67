"""Speech segmentation for long audio: where to decode, in segments the model handles well.

``detect_speech(path)`` streams a file through a detector (:mod:`speechkit.audio.vad_frames`), drops
music and noise with the music filter if chosen (:mod:`speechkit.audio.vad_filter`) and turns the
10 ms decisions into ``SpeechSegment``\\ s in five steps, all on the frame grid:

1. fill gaps shorter than ``min_silence_s`` (pauses inside a sentence) and drop speech shorter than
   ``min_speech_s`` (clicks, coughs);
2. snap each region's edges to where its sound starts and ends: the first and last frame within
   ``edge_drop_db`` of the loud part of the region's first (last) second and at least 6 dB over the
   noise floor around it, looked for up to 0.1 s beyond the detector's edge. Detectors decide on
   30 ms (webrtcvad) or 32 ms (Silero) frames and hold speech on for a while after it ends, so
   their own edges run 0.1-0.2 s early or late; snapped ones land within a frame or two of the
   waveform's;
3. pad each region by ``pad_s`` on both sides, clipped to the file; neighbours closer than two pads
   share the gap at its middle, so segments never overlap;
4. split any region longer than ``max_segment_s`` at its quietest 100 ms (lowest mean power) within
   the last ``split_search_s`` before the limit, so no cut lands mid-word when a pause exists;
5. join neighbours separated by at most ``max_merge_gap_s`` while the result stays within
   ``max_segment_s`` (fewer, longer segments decode faster; longer silences are never decoded).

Memory: the file is read ``read_window_s`` at a time; only 11 bytes per 10 ms frame are kept
(8 MB for two hours), never the waveform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkit.audio.io import iter_audio_windows
from speechkit.audio.vad_filter import music_filter
from speechkit.audio.vad_frames import FRAME_S, FRAMES_PER_S, FeatureCache, FrameScorer, FrameScores
from speechkit.errors import ConfigError

VAD_METHODS = ("webrtc", "webrtc+music-filter", "silero")
"""Detectors: webrtcvad alone; webrtcvad with the music filter (default, core dependencies only: keeps
voiced, articulated sound); Silero VAD (the ``silero`` extra: a small neural model shipped in its
wheel, runs offline, 4-10 times slower than the default on CPU; finds whispered speech, which has no
voice for the music filter)."""

WEBRTC_FRAME_MS = (10, 20, 30)

_QUIET_WINDOW_S = 0.1  # the window whose lowest power marks where to split over-long speech
# Edge snapping (step 2): how far the loudness reference and the noise floor are looked for, the
# floor's percentile and margin, and how far beyond the detector's edge the sound may start or end.
_SNAP_CONTEXT_S = 1.0
_SNAP_FLOOR_PERCENTILE, _SNAP_LOUD_PERCENTILE = 10, 90
_SNAP_ABOVE_FLOOR_DB = 6.0
_SNAP_REACH_S = 0.1


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of the original file to decode, in seconds from its start."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


@dataclass(frozen=True)
class VadOptions:
    """How speech is detected and cut into segments; all times in seconds. Checked on construction."""

    method: str = "webrtc+music-filter"  # one of VAD_METHODS
    aggressiveness: int = 3  # webrtcvad 0 (lenient) to 3 (strict)
    frame_ms: int = 30  # webrtcvad decision frame: 10, 20 or 30 ms
    silero_threshold: float = 0.5  # speech probability that starts speech (ends at threshold - 0.15)
    music_window_s: float = 2.0  # context of the music filter's statistics
    min_voiced_fraction: float = 0.3  # music filter: flagged frames that are voiced, at least
    min_articulation: float = 0.4  # music filter: voiced frames whose spectral shape moves, at least
    edge_drop_db: float = 20.0  # edges snap to the first/last frame within this much of the loud part
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    pad_s: float = 0.2
    max_segment_s: float = 30.0
    max_merge_gap_s: float = 1.0
    split_search_s: float = 5.0
    read_window_s: float = 30.0  # audio decoded at once; bounds memory

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ConfigError(f"VAD method {self.method!r} is unknown; choose one of {', '.join(VAD_METHODS)}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"VAD aggressiveness={self.aggressiveness} must be 0, 1, 2 or 3")
        if self.frame_ms not in WEBRTC_FRAME_MS:
            raise ConfigError(f"VAD frame_ms={self.frame_ms} must be 10, 20 or 30 (webrtcvad's frame sizes)")
        if not 0 < self.silero_threshold < 1:
            raise ConfigError(f"silero_threshold={self.silero_threshold} must be in (0, 1)")
        for name in ("min_speech_s", "min_silence_s", "pad_s", "max_merge_gap_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("min_voiced_fraction", "min_articulation"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be in [0, 1]")
        for name in ("music_window_s", "edge_drop_db", "read_window_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_segment_s < 1:
            raise ConfigError(f"max_segment_s={self.max_segment_s} must be at least 1 s")
        if not _QUIET_WINDOW_S <= self.split_search_s < self.max_segment_s:
            raise ConfigError(
                f"split_search_s={self.split_search_s} must be in [{_QUIET_WINDOW_S}, "
                f"max_segment_s={self.max_segment_s})"
            )


def detect_speech(path: str | Path, options: VadOptions | None = None) -> list[SpeechSegment]:
    """Speech segments of an audio file, sorted, non-overlapping, each at most ``max_segment_s`` long.

    The file is streamed (``options.read_window_s`` at a time) and resampled to 16 kHz mono like
    :func:`speechkit.audio.iter_audio_windows`; pass each segment to :func:`speechkit.audio.read_segment`.

    Raises:
        AudioError: as iter_audio_windows.
        ConfigError: the chosen detector's package is missing.
    """
    options = options or VadOptions()
    scorer = _scorer(options)
    for window in iter_audio_windows(path, options.read_window_s):
        scorer.feed(window.samples)
    return segment_scores(scorer.finish(), options)


def detect_speech_samples(
    samples: np.ndarray, options: VadOptions | None = None, cache: FeatureCache | None = None
) -> list[SpeechSegment]:
    """As :func:`detect_speech` for (N,) float32 samples in [-1, 1] at ``SAMPLE_RATE`` (16 kHz).

    Pass the same ``cache`` to calls on overlapping audio (a growing buffer) to score each 10 ms of it once.
    """
    options = options or VadOptions()
    scorer = _scorer(options, cache)
    scorer.feed(np.asarray(samples, dtype=np.float32))
    return segment_scores(scorer.finish(), options)


def segment_scores(scores: FrameScores, options: VadOptions) -> list[SpeechSegment]:
    """Steps 1-5 of the module docstring on one stream's frame scores (music filter first if chosen)."""
    speech = scores.speech
    min_silence, min_speech = _frames(options.min_silence_s), _frames(options.min_speech_s)
    if options.method == "webrtc+music-filter":
        speech = music_filter(
            scores, options.music_window_s, options.min_voiced_fraction, options.min_articulation, min_silence
        )
    regions = _drop_short(_fill_gaps(_runs(speech), min_silence), min_speech)
    regions = _drop_short(_fill_gaps(_snap(regions, scores.energy_db, options.edge_drop_db), 1), min_speech)
    regions = _pad(regions, _frames(options.pad_s), len(speech))
    regions = [piece for region in regions for piece in _split(region, scores.energy_db, options)]
    regions = _merge(regions, _frames(options.max_merge_gap_s), _frames(options.max_segment_s))
    # a / FRAMES_PER_S, not a * FRAME_S: 1899 * 0.01 is 18.990000000000002.
    return [SpeechSegment(a / FRAMES_PER_S, min(b / FRAMES_PER_S, scores.duration)) for a, b in regions]


def _scorer(options: VadOptions, cache: FeatureCache | None = None) -> FrameScorer:
    method = "silero" if options.method == "silero" else "webrtc"
    features = options.method == "webrtc+music-filter"
    return FrameScorer(method, options.aggressiveness, options.frame_ms, options.silero_threshold, features, cache)


def _frames(seconds: float) -> int:
    return round(seconds / FRAME_S)


Region = tuple[int, int]  # [first frame, end frame) on the FRAME_S grid, internal to this module


def _runs(flags: np.ndarray) -> list[Region]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _fill_gaps(regions: list[Region], min_gap: int) -> list[Region]:
    out: list[Region] = []
    for a, b in regions:
        if out and a - out[-1][1] < min_gap:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _drop_short(regions: list[Region], min_len: int) -> list[Region]:
    return [(a, b) for a, b in regions if b - a >= min_len]


def _snap(regions: list[Region], energy_db: np.ndarray, drop_db: float) -> list[Region]:
    """Step 2 of the module docstring; an edge with no frame loud enough stays where it was."""
    context, reach = _frames(_SNAP_CONTEXT_S), _frames(_SNAP_REACH_S)
    out = []
    for a, b in regions:
        floor = np.percentile(energy_db[max(0, a - context) : b + context], _SNAP_FLOOR_PERCENTILE)
        head_loud = np.percentile(energy_db[a : min(b, a + context)], _SNAP_LOUD_PERCENTILE)
        tail_loud = np.percentile(energy_db[max(a, b - context) : b], _SNAP_LOUD_PERCENTILE)
        lo = max(0, a - reach)
        starts = np.flatnonzero(energy_db[lo:b] >= max(head_loud - drop_db, floor + _SNAP_ABOVE_FLOOR_DB))
        ends = np.flatnonzero(energy_db[a : b + reach] >= max(tail_loud - drop_db, floor + _SNAP_ABOVE_FLOOR_DB))
        start = lo + int(starts[0]) if len(starts) else a
        end = a + int(ends[-1]) + 1 if len(ends) else b
        out.append((start, end) if start < end else (a, b))
    return out


def _pad(regions: list[Region], pad: int, total: int) -> list[Region]:
    out = []
    for i, (a, b) in enumerate(regions):
        lo = 0 if i == 0 else max(a - pad, (regions[i - 1][1] + a + 1) // 2)
        hi = total if i == len(regions) - 1 else min(b + pad, (b + regions[i + 1][0]) // 2)
        out.append((max(a - pad, lo), min(b + pad, hi)))
    return out


def _split(region: Region, energy_db: np.ndarray, options: VadOptions) -> list[Region]:
    limit, search, quiet = (_frames(s) for s in (options.max_segment_s, options.split_search_s, _QUIET_WINDOW_S))
    pieces = []
    a, b = region
    while b - a > limit:
        # Mean power of the quiet window centred on each candidate cut in [a + limit - search, a + limit].
        first, last = max(a + 1, a + limit - search), a + limit
        lo_frame, hi_frame = max(first - quiet // 2, 0), min(last + quiet - quiet // 2, len(energy_db))
        power = 10 ** (energy_db[lo_frame:hi_frame].astype(np.float64) / 10)
        cumulative = np.concatenate([[0.0], np.cumsum(power)])
        cuts = np.arange(first, last + 1)
        lo = np.maximum(cuts - quiet // 2, lo_frame) - lo_frame
        hi = np.minimum(cuts + quiet - quiet // 2, hi_frame) - lo_frame
        cut = int(cuts[np.argmin((cumulative[hi] - cumulative[lo]) / (hi - lo))])
        pieces.append((a, cut))
        a = cut
    return [*pieces, (a, b)]


def _merge(regions: list[Region], max_gap: int, limit: int) -> list[Region]:
    out: list[Region] = []
    for a, b in regions:
        if out and a - out[-1][1] <= max_gap and b - out[-1][0] <= limit:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
