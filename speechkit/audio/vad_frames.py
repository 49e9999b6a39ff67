"""Frame-level speech scores for :mod:`speechkit.audio.vad`: detectors and features run chunk by chunk on a stream.

Everything is put on one 10 ms grid (``FRAME_S``): frame ``i`` covers ``[i * FRAME_S, (i + 1) * FRAME_S)``
seconds. Per frame we keep only a few numbers (a decision, the frame's energy and, for the music
filter, three voice features), 11 bytes, so two hours of audio cost ~8 MB here while its waveform
would cost 460 MB.

The voice features, on a 32 ms window centred on the frame (``_WINDOW_N`` samples):

- periodicity: the normalised correlation of the window with itself shifted by one pitch period,
  maximised over periods of 2-16.7 ms (a pitch of 60-500 Hz, the speaking voice), with the period
  kept as ``pitch_lag``. A tone above the voice's range (a whistle, a siren, a pure tone) is as periodic
  at a shorter lag than any in that range; such frames get periodicity 0, so no sinusoid passes as a
  voice one octave down.
- shape change: how much the spectral envelope moved in the last 50 ms, in dB averaged over 16
  mel-spaced bands (100-4000 Hz, where formants lie). Each band spectrum is floored 30 dB below its
  strongest band and has its mean removed, so loudness changes (tremolo, a struck note's decay) and
  empty bands do not count: only the shape of the spectrum does, which in speech moves with every
  articulation and in a held or decaying chord, a hum or a drone does not.
"""

from __future__ import annotations

import hashlib
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

# Floor for frame energies (dB re full scale): digital silence would otherwise be -inf.
ENERGY_FLOOR_DB = -100.0

SHAPE_LAG = 5
"""Frames (50 ms) between the two spectra that ``shape_change_db`` compares."""

# The voice features' window: 32 ms centred on the frame.
_WINDOW_N = 512
_WINDOW_LEAD = (_WINDOW_N - FRAME_N) // 2  # window samples before the frame's first sample (176)
_PITCH_LAGS = (SAMPLE_RATE // 500, SAMPLE_RATE // 60)  # pitch periods in samples: 500 Hz down to 60 Hz
# FFT size of the autocorrelation: an M-point FFT of the zero-padded window gives r[L] + r[M - L], which
# is the linear r[L] for L <= M - _WINDOW_N; 800 covers the longest period (+1) and is fast (2^5 * 5^2).
_CORR_FFT_N = 800
assert _CORR_FFT_N - _WINDOW_N > _PITCH_LAGS[1]
_SHORT_LAGS = (SAMPLE_RATE // 2000, SAMPLE_RATE // 500)  # periods of tones above the voice (2000-500 Hz)
_TIE = 0.01  # periodicities closer than this are a tie
_BANDS, _BAND_LO_HZ, _BAND_HI_HZ = 16, 100.0, 4000.0
_SHAPE_RANGE_DB = 30.0  # band energies are floored this far below the frame's strongest band
_FEATURE_BLOCK = 1000  # frames (10 s) whose FFTs are taken at once: ~25 MB of scratch

# Silero's model takes 512-sample chunks at 16 kHz and ends speech below threshold - 0.15
# (the hysteresis of its own get_speech_timestamps).
SILERO_CHUNK = 512
SILERO_HYSTERESIS = 0.15


@dataclass(frozen=True, eq=False)
class FrameScores:
    """Per-frame results for one stream, on the ``FRAME_S`` grid (F frames)."""

    speech: np.ndarray  # (F,) bool: the detector's decision, before the music filter
    energy_db: np.ndarray  # (F,) float32: mean power of the frame in dB re full scale
    periodicity: np.ndarray  # (F,) float16 in [-1, 1]: voice-range periodicity (module docstring); 0 if not scored
    pitch_lag: np.ndarray  # (F,) uint16: the pitch period in samples at SAMPLE_RATE; 0 if not scored
    shape_change_db: np.ndarray  # (F,) float16: spectral-shape change over the last SHAPE_LAG frames
    duration: float  # seconds of audio seen, including a last partial frame


class FeatureCache:
    """Voice features of frame windows scored before, looked up by the window's samples.

    For a caller that re-scores a buffer that mostly holds audio it scored last time (the streaming
    detector re-runs over the open segment every second): each window's features are computed once.
    Features depend on the window alone, so a hit is exact. After each stream (``FrameScorer.finish``)
    only the windows that stream used are kept, so the cache holds about one buffer's worth.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, int, np.ndarray]] = {}
        self._used: dict[bytes, tuple[float, int, np.ndarray]] = {}

    def features(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(periodicity, pitch_lag, shapes) of (k, _WINDOW_N) windows, computing only the unseen ones."""
        keys = [hashlib.blake2b(w.tobytes(), digest_size=16).digest() for w in windows]
        new = [i for i, key in enumerate(keys) if key not in self._entries and key not in self._used]
        if new:
            x = windows[new].astype(np.float64)
            for i, p, lag, shape in zip(new, *_periodicity(x), _spectral_shape(x), strict=True):
                self._used[keys[i]] = (p, lag, shape)
        found = [self._used.get(key) or self._entries[key] for key in keys]
        self._used.update(zip(keys, found, strict=True))
        if not found:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros((0, _BANDS), np.float32)
        periodicity, lag, shapes = zip(*found, strict=True)
        return np.array(periodicity), np.array(lag), np.stack(shapes)

    def end_stream(self) -> None:
        self._entries, self._used = self._used, {}


class FrameScorer:
    """Feeds a stream of 16 kHz float32 chunks through a detector; ``finish()`` returns FrameScores.

    ``method`` is ``"webrtc"`` (aggressiveness 0-3, decisions every ``frame_ms`` of 10/20/30 ms) or
    ``"silero"`` (probability per 32 ms, threshold with hysteresis). Chunks may have any length. With
    ``voice_features`` (webrtc only: the music filter's input) the voice features are computed for
    the frames webrtcvad flags, which are the only ones the filter looks at; elsewhere they stay 0.
    A ``cache`` shared by successive streams skips windows they have in common.
    """

    def __init__(
        self,
        method: str,
        aggressiveness: int,
        frame_ms: int,
        silero_threshold: float,
        voice_features: bool = False,
        cache: FeatureCache | None = None,
    ) -> None:
        if voice_features and method != "webrtc":
            raise ValueError(f"voice features are scored on webrtcvad's decisions, not {method}'s")
        self._cache = cache
        self._detector = (
            _WebrtcDetector(aggressiveness, frame_ms) if method == "webrtc" else _SileroDetector(silero_threshold)
        )
        self._features = voice_features
        # Samples from the first unscored frame's window start on; the stream starts with zeros.
        self._buffer = np.zeros(_WINDOW_LEAD, dtype=np.float32)
        # The last SHAPE_LAG frames' spectral shapes, and whether each was computed.
        self._last_shapes = np.zeros((SHAPE_LAG, _BANDS), dtype=np.float32)
        self._last_scored = np.zeros(SHAPE_LAG, dtype=bool)
        self._blocks: list[tuple[np.ndarray, ...]] = []
        self._scored = 0  # frames scored so far
        self._samples = 0

    def feed(self, samples: np.ndarray) -> None:
        """Add the next (N,) float32 samples at ``SAMPLE_RATE``."""
        self._samples += len(samples)
        self._detector.feed(samples)
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        # With features, a frame waits for its detector decision too.
        self._score_ready_frames(self._detector.decided_frames() if self._features else None)

    def finish(self) -> FrameScores:
        """Flush the stream (a last partial frame counts, zero-padded) and return the scores."""
        frames = -(-self._samples // FRAME_N)
        self._buffer = np.concatenate([self._buffer, np.zeros(_WINDOW_N, dtype=np.float32)])
        self._score_ready_frames(frames)
        columns = (
            [np.concatenate(c) for c in zip(*self._blocks, strict=True)]
            if self._blocks
            else [np.zeros(0, t) for t in (np.float32, np.float16, np.uint16, np.float16)]
        )
        if self._cache is not None:
            self._cache.end_stream()
        return FrameScores(self._detector.finish(frames), *columns, duration=self._samples / SAMPLE_RATE)

    def _score_ready_frames(self, limit: int | None) -> None:
        """Score every frame whose whole window is in the buffer (up to frame ``limit``), then drop its samples."""
        ready = max(0, (len(self._buffer) - _WINDOW_N) // FRAME_N + 1)
        ready = ready if limit is None else min(ready, limit - self._scored)
        if ready <= 0:
            return
        windows = np.lib.stride_tricks.sliding_window_view(self._buffer, _WINDOW_N)[::FRAME_N]
        for start in range(0, ready, _FEATURE_BLOCK):
            stop = min(ready, start + _FEATURE_BLOCK)
            self._blocks.append(self._score(windows[start:stop]))
            self._scored += stop - start
        self._buffer = self._buffer[ready * FRAME_N :]

    def _score(self, windows: np.ndarray) -> tuple[np.ndarray, ...]:
        """(energy_db, periodicity, pitch_lag, shape_change_db) of the next (k, _WINDOW_N) frame windows."""
        k = len(windows)
        frame = windows[:, _WINDOW_LEAD : _WINDOW_LEAD + FRAME_N].astype(np.float64)
        energy = np.maximum(10 * np.log10(np.mean(frame**2, axis=1) + 1e-20), ENERGY_FLOOR_DB).astype(np.float32)
        periodicity, lag = np.zeros(k, np.float16), np.zeros(k, np.uint16)
        shapes, scored = np.zeros((k, _BANDS), np.float32), np.zeros(k, dtype=bool)
        if self._features:
            scored = self._detector.flags(self._scored, self._scored + k)
            if self._cache is not None:
                periodicity[scored], lag[scored], shapes[scored] = self._cache.features(windows[scored])
            else:
                x = windows[scored].astype(np.float64)
                periodicity[scored], lag[scored] = _periodicity(x)
                shapes[scored] = _spectral_shape(x)
        shapes = np.concatenate([self._last_shapes, shapes])
        scored = np.concatenate([self._last_scored, scored])
        change = np.abs(shapes[SHAPE_LAG:] - shapes[:-SHAPE_LAG]).mean(axis=1)
        change = np.where(scored[SHAPE_LAG:] & scored[:-SHAPE_LAG], change, 0.0)
        self._last_shapes, self._last_scored = shapes[-SHAPE_LAG:], scored[-SHAPE_LAG:]
        return energy, periodicity, lag, change.astype(np.float16)


def _periodicity(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voice-range periodicity and pitch lag of (k, _WINDOW_N) windows (see the module docstring).

    For lag L the normalised correlation is sum x[n] x[n + L] / sqrt(sum x[:N-L]^2 * sum x[L:]^2),
    the exact cosine between the window and its shifted self; its numerator for every lag is one
    inverse FFT of the power spectrum, its denominator two cumulative sums. Only local maxima count.
    """
    spectrum = np.fft.rfft(x, _CORR_FFT_N, axis=1)
    corr = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, _CORR_FFT_N, axis=1)
    energy = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x**2, axis=1)], axis=1)

    def best_peak(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        lags = np.arange(lo - 1, hi + 2)  # one lag beyond each end, to tell local maxima
        head, tail = energy[:, _WINDOW_N - lags], energy[:, -1:] - energy[:, lags]
        r = corr[:, lags] / np.sqrt(head * tail + 1e-20)
        inner = r[:, 1:-1]
        peaks = np.where((inner >= r[:, :-2]) & (inner >= r[:, 2:]), inner, -1.0)
        best = peaks.max(axis=1)
        # The shortest period that ties the best: a steady tone is as periodic at twice its period.
        return best, np.argmax(peaks >= best[:, None] - _TIE, axis=1) + lo

    periodicity, lag = best_peak(*_PITCH_LAGS)
    above_voice, _ = best_peak(*_SHORT_LAGS)
    # Likewise a tone above the voice is as periodic at a multiple of its period in the voice's range.
    return np.where(periodicity > above_voice + _TIE, periodicity, 0.0), lag


def _spectral_shape(x: np.ndarray) -> np.ndarray:
    """(k, _BANDS) level-normalised band log-energies of (k, _WINDOW_N) Hann-windowed windows."""
    spectrum = np.fft.rfft(x * _HANN, axis=1)
    bands = 10 * np.log10((spectrum.real**2 + spectrum.imag**2) @ _BAND_MATRIX + 1e-12)
    bands = np.maximum(bands, bands.max(axis=1, keepdims=True) - _SHAPE_RANGE_DB)
    return (bands - bands.mean(axis=1, keepdims=True)).astype(np.float32)


def _mel_band_matrix() -> np.ndarray:
    """(bins, _BANDS) triangular filters, evenly spaced on the mel scale over [_BAND_LO_HZ, _BAND_HI_HZ]."""
    freqs = np.fft.rfftfreq(_WINDOW_N, 1 / SAMPLE_RATE)
    mel = np.linspace(*(2595 * np.log10(1 + f / 700) for f in (_BAND_LO_HZ, _BAND_HI_HZ)), _BANDS + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    lo, centre, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising, falling = (freqs - lo) / (centre - lo), (hi - freqs) / (hi - centre)
    return np.clip(np.minimum(rising, falling), 0, None).T.astype(np.float64)


_BAND_MATRIX = _mel_band_matrix()
_HANN = np.hanning(_WINDOW_N)


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

    def decided_frames(self) -> int:
        return len(self._decisions) * self._per_grid

    def flags(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) bool decisions of grid frames [start, stop); undecided ones are False."""
        first = start // self._per_grid
        decisions = np.array(self._decisions[first : -(-stop // self._per_grid)], dtype=bool)
        out = np.repeat(decisions, self._per_grid)[start - first * self._per_grid :][: stop - start]
        return np.pad(out, (0, stop - start - len(out)))

    def finish(self, frames: int) -> np.ndarray:
        # A trailing part shorter than one detector frame is never judged: it stays non-speech.
        return self.flags(0, frames)


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


def _import(module: str, package: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the {module} module is missing; pip install '{package}' ({hint})") from None
