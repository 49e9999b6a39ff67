"""Frame-level speech scores for :mod:`speechkit.audio.vad`: detectors run chunk by chunk on a stream.

Everything is put on one 10 ms grid (``FRAME_S``): frame ``i`` covers ``[i * FRAME_S, (i + 1) * FRAME_S)``
seconds. Per frame we keep only a few numbers (a decision, the frame's energy, its spectral flux), about
9 bytes, so two hours of audio cost ~6 MB here while its waveform would cost 460 MB.

Why a second line of defence: webrtcvad is at heart an energy and spectral-shape detector. On our
measurements at aggressiveness 3 it flags 100 % of a sustained synthetic chord, 97 % of stationary
white noise and 76 % of a drum-like click track. The music filter keeps a flagged frame only when the
flagged frames around it (``music_window_s``) look like speech: their energy rises and falls by
syllables (90th minus 10th percentile of frame energy at least ``min_energy_spread_db``; speech
measures 4-30 dB, a held chord at most ~3 dB, a noise floor ~1 dB) and their spectrum does not jump
as sharply as percussion does (mean spectral flux at most ``max_flux_db``; speech measures ~3 dB, a
click track ~9 dB). Only flagged frames enter the statistics so that a chord starting after silence
is not passed by the silence-to-chord step.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from speechkit.audio.io import SAMPLE_RATE
from speechkit.errors import ConfigError

FRAMES_PER_S = 100
FRAME_S = 1 / FRAMES_PER_S
"""Seconds per analysis frame (10 ms); segment edges fall on this grid."""

FRAME_N = round(FRAME_S * SAMPLE_RATE)  # samples per frame (160)

# Spectral flux uses a 2-frame (20 ms) Hann window for 50 Hz bins, pooled into log-spaced bands over
# the range that carries speech formants; finer bands would mostly measure harmonic jitter.
_FLUX_WINDOW = np.hanning(2 * FRAME_N).astype(np.float32)
_FLUX_BANDS = 8
_FLUX_LO_HZ, _FLUX_HI_HZ = 150.0, 4000.0

# Floor for frame energies (dB re full scale): digital silence would otherwise be -inf.
ENERGY_FLOOR_DB = -100.0

# Percentiles of the music filter's energy spread, and frames sorted at once (8192 x 101 float32: 3 MB).
_SPREAD_LO, _SPREAD_HI = 0.1, 0.9
_SPREAD_BLOCK = 8192
_SPREAD_RANGE_DB = 30.0
_FILTER_BLOCK = 60_000  # frames (10 minutes) the music filter handles at once

# Silero's model takes 512-sample chunks at 16 kHz and ends speech below threshold - 0.15
# (the hysteresis of its own get_speech_timestamps).
SILERO_CHUNK = 512
SILERO_HYSTERESIS = 0.15


@dataclass(frozen=True, eq=False)
class FrameScores:
    """Per-frame results for one stream, on the ``FRAME_S`` grid."""

    speech: np.ndarray  # (F,) bool: the detector's decision, before the music filter
    energy_db: np.ndarray  # (F,) float32: mean power of the frame in dB re full scale
    flux_db: np.ndarray  # (F,) float32: mean absolute change of band log-energies from the previous frame
    duration: float  # seconds of audio seen, including a last partial frame


class FrameScorer:
    """Feeds a stream of 16 kHz float32 chunks through a detector; ``finish()`` returns FrameScores.

    ``method`` is ``"webrtc"`` (aggressiveness 0-3, decisions every ``frame_ms`` of 10/20/30 ms) or
    ``"silero"`` (probability per 32 ms, threshold with hysteresis). Chunks may have any length.
    """

    def __init__(self, method: str, aggressiveness: int, frame_ms: int, silero_threshold: float) -> None:
        self._detector = _WebrtcDetector(aggressiveness, frame_ms) if method == "webrtc" else _SileroDetector(
            silero_threshold
        )
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet in a whole frame
        self._previous = np.zeros(FRAME_N, dtype=np.float32)  # last frame, for the 20 ms flux window
        self._previous_bands: np.ndarray | None = None
        self._energy: list[np.ndarray] = []
        self._flux: list[np.ndarray] = []
        self._samples = 0

    def feed(self, samples: np.ndarray) -> None:
        """Add the next (N,) float32 samples at ``SAMPLE_RATE``."""
        self._samples += len(samples)
        self._detector.feed(samples)
        buf = np.concatenate([self._pending, samples])
        whole = len(buf) // FRAME_N * FRAME_N
        self._pending = buf[whole:]
        if whole:
            self._add_frames(buf[:whole].reshape(-1, FRAME_N))

    def finish(self) -> FrameScores:
        """Flush the stream (a last partial frame counts, zero-padded) and return the scores."""
        if len(self._pending):
            last = np.zeros(FRAME_N, dtype=np.float32)
            last[: len(self._pending)] = self._pending
            self._add_frames(last[None])
        n = sum(len(e) for e in self._energy)
        return FrameScores(
            speech=self._detector.finish(n),
            energy_db=np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32),
            flux_db=np.concatenate(self._flux) if self._flux else np.zeros(0, np.float32),
            duration=self._samples / SAMPLE_RATE,
        )

    def _add_frames(self, frames: np.ndarray) -> None:
        power = np.mean(frames.astype(np.float64) ** 2, axis=1)
        self._energy.append(np.maximum(10 * np.log10(power + 1e-20), ENERGY_FLOOR_DB).astype(np.float32))
        windows = np.concatenate([np.vstack([self._previous[None], frames[:-1]]), frames], axis=1)
        self._previous = frames[-1].copy()
        bands = _band_log_energies(windows)
        before = bands[:1] if self._previous_bands is None else self._previous_bands
        self._flux.append(np.abs(np.diff(np.vstack([before, bands]), axis=0)).mean(axis=1).astype(np.float32))
        self._previous_bands = bands[-1:]


def _band_log_energies(windows: np.ndarray) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(windows * _FLUX_WINDOW, axis=1)) ** 2
    return 10 * np.log10(spectrum @ _FLUX_BAND_MATRIX + 1e-10)


def _band_matrix() -> np.ndarray:
    """(bins, bands) 0/1 matrix summing the 20 ms window's power bins into the flux bands."""
    freqs = np.fft.rfftfreq(len(_FLUX_WINDOW), 1 / SAMPLE_RATE)
    edges = np.geomspace(_FLUX_LO_HZ, _FLUX_HI_HZ, _FLUX_BANDS + 1)
    bands = zip(edges[:-1], edges[1:], strict=True)
    return np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in bands], axis=1).astype(np.float32)


_FLUX_BAND_MATRIX = _band_matrix()


class _WebrtcDetector:
    def __init__(self, aggressiveness: int, frame_ms: int) -> None:
        webrtcvad = _import("webrtcvad", "webrtcvad-wheels", "it is a core dependency; reinstall speechkit")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._n = frame_ms * SAMPLE_RATE // 1000
        self._per_grid = frame_ms // 10
        self._pending = np.zeros(0, dtype=np.int16)
        self._decisions: list[bool] = []

    def feed(self, samples: np.ndarray) -> None:
        pcm = np.concatenate([self._pending, (np.clip(samples, -1, 1) * 32767).astype(np.int16)])
        whole = len(pcm) // self._n * self._n
        data = pcm[:whole].astype("<i2").tobytes()
        step = 2 * self._n
        self._decisions += [self._vad.is_speech(data[i : i + step], SAMPLE_RATE) for i in range(0, len(data), step)]
        self._pending = pcm[whole:]

    def finish(self, frames: int) -> np.ndarray:
        # A trailing part shorter than one detector frame is never judged: it stays non-speech.
        out = np.repeat(np.array(self._decisions, dtype=bool), self._per_grid)[:frames]
        return np.pad(out, (0, frames - len(out)))


class _SileroDetector:
    def __init__(self, threshold: float) -> None:
        torch = _import("torch", "torch", "reinstall speechkit")
        threads = torch.get_num_threads()
        silero_vad = _import("silero_vad", "speechkit[silero]", "or choose --vad webrtc+music-filter")
        # Importing silero_vad calls torch.set_num_threads(1) for the whole process; undo that so the
        # model that runs after us keeps its threads.
        torch.set_num_threads(threads)
        self._torch = torch
        self._model = silero_vad.load_silero_vad()
        self._model.reset_states()
        self._threshold = threshold
        self._pending = np.zeros(0, dtype=np.float32)
        self._probs: list[float] = []

    def feed(self, samples: np.ndarray) -> None:
        buf = np.concatenate([self._pending, samples.astype(np.float32)])
        whole = len(buf) // SILERO_CHUNK * SILERO_CHUNK
        threads = self._torch.get_num_threads()
        # One 512-sample chunk is too little work to share: with 16 threads it runs ~25x slower.
        self._torch.set_num_threads(1)
        try:
            with self._torch.inference_mode():
                for i in range(0, whole, SILERO_CHUNK):
                    chunk = self._torch.from_numpy(buf[i : i + SILERO_CHUNK].copy())
                    self._probs.append(float(self._model(chunk, SAMPLE_RATE)))
        finally:
            self._torch.set_num_threads(threads)
        self._pending = buf[whole:]

    def finish(self, frames: int) -> np.ndarray:
        if len(self._pending):
            self.feed(np.zeros(SILERO_CHUNK - len(self._pending), dtype=np.float32))
        chunk_speech = np.zeros(len(self._probs), dtype=bool)
        active = False
        for i, p in enumerate(self._probs):
            active = p >= self._threshold or (active and p >= self._threshold - SILERO_HYSTERESIS)
            chunk_speech[i] = active
        # Each 10 ms frame takes the decision of the chunk holding its centre.
        centres = (np.arange(frames) * FRAME_N + FRAME_N // 2) // SILERO_CHUNK
        return chunk_speech[np.minimum(centres, len(chunk_speech) - 1)] if len(chunk_speech) else np.zeros(frames, bool)


def music_filter(scores: FrameScores, window_s: float, min_energy_spread_db: float, max_flux_db: float) -> np.ndarray:
    """Speech decisions with stationary (chord, hum, noise) and percussive stretches removed.

    Returns (F,) bool: ``scores.speech`` where, over the flagged frames within ``window_s`` seconds
    centred on the frame, the energy spread (90th minus 10th percentile) is at least
    ``min_energy_spread_db`` dB and the mean spectral flux at most ``max_flux_db`` dB (see the module
    docstring). Works in overlapping blocks so its scratch memory does not grow with the file.
    """
    half = max(1, round(window_s / FRAME_S / 2))
    n = len(scores.speech)
    out = np.zeros(n, dtype=bool)
    for start in range(0, n, _FILTER_BLOCK):
        lo, hi = max(0, start - half), min(n, start + _FILTER_BLOCK + half)
        flags = scores.speech[lo:hi]
        count = np.maximum(_window_sums(flags.astype(np.float64), half), 1)
        flux = _window_sums(np.where(flags, scores.flux_db[lo:hi], 0.0), half) / count
        spread = _flagged_spread(scores.energy_db[lo:hi], flags, half)
        keep = flags & (spread >= min_energy_spread_db) & (flux <= max_flux_db)
        out[start : start + _FILTER_BLOCK] = keep[start - lo : start - lo + _FILTER_BLOCK]
    return out


def _flagged_spread(energy_db: np.ndarray, flags: np.ndarray, half: int) -> np.ndarray:
    """p90 - p10 of energy over the loud flagged frames of each flagged frame's window; 0 elsewhere.

    Loud: within ``_SPREAD_RANGE_DB`` of the window's loudest flagged frame. The detector's hangover
    flags ~100 ms of the silence after a sound; counting those frames (80 dB down for digital
    silence) would pass a held chord near its end. Percentiles rather than a standard deviation for
    the same reason: a few stray frames must not decide.
    """
    out = np.zeros(len(energy_db), dtype=np.float32)
    rows = np.flatnonzero(flags)
    masked = np.pad(np.where(flags, energy_db, -np.inf).astype(np.float32), half, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(masked, 2 * half + 1)
    for start in range(0, len(rows), _SPREAD_BLOCK):  # blocks bound the sorted copies' memory
        block = rows[start : start + _SPREAD_BLOCK]
        ordered = np.sort(windows[block], axis=1)  # unflagged (-inf) frames sort first
        loudest = ordered[:, -1:]
        first = np.sum(ordered < loudest - _SPREAD_RANGE_DB, axis=1)  # index of the first loud frame
        span = ordered.shape[1] - 1 - first
        lo = np.take_along_axis(ordered, (first + np.floor(_SPREAD_LO * span).astype(np.int64))[:, None], axis=1)
        hi = np.take_along_axis(ordered, (first + np.floor(_SPREAD_HI * span).astype(np.int64))[:, None], axis=1)
        out[block] = (hi - lo)[:, 0]
    return out


def _window_sums(x: np.ndarray, half: int) -> np.ndarray:
    """Sum of x over [i - half, i + half] for each i, clipped to the array, in O(n)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    return c[np.minimum(i + half + 1, len(x))] - c[np.maximum(i - half, 0)]


def _import(module: str, package: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the {module} module is missing; pip install '{package}' ({hint})") from None
