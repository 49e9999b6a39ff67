"""Audio input: decode files, bytes or arrays to mono float32 at the rate the model's features use.

Phi-4-multimodal's feature extractor works on 16 kHz audio, or on native 8 kHz audio through its
"fill-zero" path (reference A.2, A.8). Every other rate is resampled here with soxr (HQ) to exactly
16 kHz: the official integer-factor decimation turns 44.1 kHz into 22.05 kHz declared as 16 kHz
(a pitch and speed error), so a port must never rely on it. Three ways in, all mono float32:
:func:`load_audio` (a whole clip: path, bytes, numpy array or torch tensor), :func:`read_segment`
(seeks to one time range of a file, for VAD segments) and :func:`iter_audio_windows` (streams a
multi-hour file window by window). Anything libsndfile reads is accepted (wav, flac, ogg/vorbis/opus,
mp3 with libsndfile >= 1.1).
"""

from __future__ import annotations

import io
import math
import operator
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from speechkit.errors import AudioError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
"""Rate (Hz) the model's features are defined at; every resampling targets it."""

FILL_ZERO_RATE = 8000
"""Native 8 kHz audio may stay at this rate (Hz) for the official fill-zero features (reference A.8);
it is also the lowest rate the model accepts."""

# One analysis window of the feature extractor (400 samples at 16 kHz, 200 at 8 kHz): shorter
# audio yields no feature frame at all, so it is rejected here with a message instead.
WINDOW_MS = 25

# Float audio whose peak exceeds INT16_LIKE_PEAK is not [-1, 1] audio. Up to INT16_SCALE it is
# almost always int16 PCM cast to float without scaling (np.frombuffer(b, np.int16).astype(float)),
# which would shift every log-mel value by ~20.8 (reference A.1), so load_audio rescales it.
INT16_LIKE_PEAK = 2.0
INT16_SCALE = 32768.0

_INT_SCALES = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}  # full-range PCM -> [-1, 1)

# The channel axis of a 2-D array is one with at most this many entries (see load_audio).
MAX_ARRAY_CHANNELS = 8

RESAMPLE_QUALITY = "HQ"

# Extra input read around a segment so the resampler's edge transient (< 10 ms at HQ) falls outside.
_SEGMENT_CONTEXT_S = 0.05

# Frames per soundfile read in the streamed reader (~1.5 s at 44.1 kHz): memory stays flat.
_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class Waveform:
    """Mono audio ready for the feature extractor."""

    samples: np.ndarray  # (N,) float32, nominally in [-1, 1]
    sample_rate: int  # Hz: SAMPLE_RATE, or FILL_ZERO_RATE for native 8 kHz audio kept as is
    source: str  # a path, "<N bytes>", "<array>" or "<tensor>", for messages

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class AudioInfo:
    """A file's header, read without decoding."""

    duration: float  # seconds (frames / sample_rate)
    sample_rate: int  # the file's native rate, Hz
    channels: int
    frames: int  # samples per channel as the header states it (an estimate for some mp3 files)


@dataclass(frozen=True, eq=False)
class AudioWindow:
    """One window from :func:`iter_audio_windows`."""

    samples: np.ndarray  # (N,) float32 mono at SAMPLE_RATE; the last window may be shorter
    start_s: float  # seconds from the start of the original file

    @property
    def end_s(self) -> float:
        """End time in seconds in the original file."""
        return self.start_s + len(self.samples) / SAMPLE_RATE


def load_audio(
    source: str | Path | bytes | np.ndarray | torch.Tensor,
    *,
    sample_rate: int | None = None,
    keep_8k: bool = True,
) -> Waveform:
    """Decode a whole clip to mono float32 at ``SAMPLE_RATE`` (or ``FILL_ZERO_RATE``).

    Args:
        source: an audio file path; the bytes of an audio file (a container libsndfile reads,
            not headerless PCM); or a numpy array / torch tensor of samples. Arrays are (N,),
            (N, C) or (C, N): the second axis is the channel axis when it has at most
            ``MAX_ARRAY_CHANNELS`` entries, else the first when it does, else the array is
            rejected. Float arrays are taken as [-1, 1]; int16 and int32 as full-range PCM.
        sample_rate: rate of an array source in Hz (required there, rejected for files and
            bytes, whose header states it).
        keep_8k: keep native 8 kHz audio at 8 kHz for the official fill-zero features; with
            False it is resampled to 16 kHz like any other rate.

    Channels are averaged to mono. Float audio peaking above ``INT16_LIKE_PEAK`` (2.0) but not
    above 32768 is taken to be unscaled int16 and multiplied by 1/32768, with a warning; a higher
    peak is an error.

    Raises:
        AudioError: missing or undecodable file; unusable array; rate below 8 kHz; no samples or
            less than one 25 ms window; NaN/Inf samples.
    """
    if isinstance(source, str | Path | bytes | bytearray):
        if isinstance(source, str | Path):
            name, file = str(source), _existing(source)
        else:
            name, file = f"<{len(source)} bytes>", io.BytesIO(source)
        if sample_rate is not None:
            raise AudioError(f"sample_rate is for arrays only; {name} states its own rate, drop it")
        with _open(file, name) as f:
            rate = f.samplerate
            frames = _read(f, -1, name)
    else:
        array, name = _as_numpy(source)
        if sample_rate is None:
            raise AudioError(f"{name} has no sample rate; call load_audio(x, sample_rate=<Hz>)")
        rate = _whole_hz(sample_rate, name)
        frames = _to_float32(_frames_by_channels(array, name), name)
    mono = _downmix(frames, name)
    _check_finite(mono, name)
    return _to_model_rate(_fix_int16_scale(mono, name), rate, name, keep_8k)


def audio_info(path: str | Path) -> AudioInfo:
    """Read the header of an audio file without decoding its samples."""
    name = str(path)
    try:
        info = sf.info(str(_existing(path)))
    except sf.SoundFileError as err:
        raise _decode_error(name, err) from err
    return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)


def read_segment(path: str | Path, start_s: float, end_s: float, *, keep_8k: bool = True) -> Waveform:
    """Decode the time range [start_s, end_s) seconds of a file, seeking instead of reading it all.

    The result equals the same range of ``load_audio(path, keep_8k=keep_8k)`` sample for sample
    at the output rate (to ~1e-6 after resampling, exactly without); ``end_s`` past the end of the
    file is clipped to it. Unlike load_audio, float samples outside [-1, 1] are an error here,
    because the int16 rescaling decision needs the whole file's peak.

    Raises:
        AudioError: as load_audio, plus a range that is empty, negative or starts past the end.
    """
    name = str(path)
    if not 0 <= start_s < end_s:
        raise AudioError(
            f"segment [{start_s}, {end_s}) s of {name} is empty or negative; need 0 <= start_s < end_s"
        )
    with _open(_existing(path), name) as f:
        rate = _check_rate(f.samplerate, name)
        out_rate = FILL_ZERO_RATE if keep_8k and rate == FILL_ZERO_RATE else SAMPLE_RATE
        total = round(f.frames * out_rate / rate)  # soxr's output length for the whole file
        first, last = round(start_s * out_rate), min(round(end_s * out_rate), total)
        if first >= total:
            raise AudioError(
                f"segment start {start_s} s is past the end of {name} ({total / out_rate:.3f} s); "
                "pass a start inside the file"
            )
        if rate == out_rate:
            f.seek(first)
            mono = _downmix(_read(f, last - first, name), name)
        else:
            # Start the read on a frame where input and output sample grids coincide, so the
            # segment's output samples sit exactly on the whole-file output grid.
            g = math.gcd(rate, out_rate)
            step_in, step_out = rate // g, out_rate // g
            block = max(0, first - round(_SEGMENT_CONTEXT_S * out_rate)) // step_out
            in_lo, out_lo = block * step_in, block * step_out
            in_hi = min(f.frames, math.ceil((last + _SEGMENT_CONTEXT_S * out_rate) * rate / out_rate))
            f.seek(in_lo)
            mono = _downmix(_read(f, in_hi - in_lo, name), name)
            mono = soxr.resample(mono, rate, out_rate, quality=RESAMPLE_QUALITY)
            mono = mono[first - out_lo : last - out_lo]
    _check_partial_read(mono, name)
    _check_length(len(mono), out_rate, name)
    return Waveform(np.ascontiguousarray(mono, dtype=np.float32), out_rate, name)


def iter_audio_windows(
    path: str | Path, window_s: float, hop_s: float | None = None
) -> Iterator[AudioWindow]:
    """Stream a file as mono ``SAMPLE_RATE`` windows without ever holding the whole file.

    Blocks are read in order and resampled by one ``soxr.ResampleStream``, so the windows are
    cut from one continuous resampled signal: with ``hop_s == window_s`` their concatenation
    equals ``load_audio(path, keep_8k=False).samples`` (exactly for 16 kHz files; 8 kHz files
    are resampled to 16 kHz here too). Windows start every ``hop_s`` seconds (default
    ``window_s``: no overlap); the last one holds the remaining samples and may be shorter than
    a window, even under 25 ms. The file is opened and checked when this is called, decoded as
    windows are taken. Float samples outside [-1, 1] are an error here (see read_segment).

    Raises:
        AudioError: as load_audio; window_s under 25 ms; hop_s outside (0, window_s].
    """
    name = str(path)
    window_n = round(window_s * SAMPLE_RATE)
    hop_n = window_n if hop_s is None else round(hop_s * SAMPLE_RATE)
    if window_n < SAMPLE_RATE * WINDOW_MS // 1000:
        raise AudioError(f"window_s={window_s} for {name} is under one {WINDOW_MS} ms frame; pass more")
    if not 0 < hop_n <= window_n:
        raise AudioError(f"hop_s={hop_s} for {name} must be in (0, window_s={window_s}]")
    info = audio_info(path)
    _check_rate(info.sample_rate, name)
    _check_length(round(info.frames * SAMPLE_RATE / info.sample_rate), SAMPLE_RATE, name)
    return _windows(Path(path), name, window_n, hop_n)


def _windows(path: Path, name: str, window_n: int, hop_n: int) -> Iterator[AudioWindow]:
    with _open(path, name) as f:
        resampler = None
        if f.samplerate != SAMPLE_RATE:
            resampler = soxr.ResampleStream(
                f.samplerate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        buf = np.zeros(0, dtype=np.float32)
        start = 0  # output index of buf[0], which is also where the next window starts
        covered = 0  # output index where the last yielded window ended
        done = False
        while not done:
            block = _downmix(_read(f, _BLOCK_FRAMES, name), name)
            done = len(block) < _BLOCK_FRAMES
            _check_partial_read(block, name)
            if resampler is not None:
                block = resampler.resample_chunk(block, last=done)
            buf = np.concatenate([buf, block])
            while len(buf) >= window_n:
                yield AudioWindow(buf[:window_n].copy(), start / SAMPLE_RATE)
                covered = start + window_n
                buf, start = buf[hop_n:], start + hop_n
        if start + len(buf) > covered:
            yield AudioWindow(buf.copy(), start / SAMPLE_RATE)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"no audio file at {path}; check the path")
    return path


@contextmanager
def _open(file: Path | io.BytesIO, name: str) -> Iterator[sf.SoundFile]:
    """``sf.SoundFile`` whose open errors become AudioError."""
    try:
        handle = sf.SoundFile(file if isinstance(file, io.BytesIO) else str(file))
    except sf.SoundFileError as err:
        raise _decode_error(name, err) from err
    with handle:
        yield handle


def _read(f: sf.SoundFile, frames: int, name: str) -> np.ndarray:
    """(frames, channels) float32; decode errors (a truncated FLAC) surface here, not at open."""
    try:
        return f.read(frames, dtype="float32", always_2d=True)
    except sf.SoundFileError as err:
        raise _decode_error(name, err) from err


def _decode_error(name: str, err: sf.SoundFileError) -> AudioError:
    reason = (getattr(err, "error_string", "") or str(err)).strip().rstrip(".")
    return AudioError(f"could not decode {name}: {reason}; convert it to wav/flac with ffmpeg")


def _as_numpy(source: object) -> tuple[np.ndarray, str]:
    # A tensor can only exist once torch is imported; looking in sys.modules spares file-only
    # callers the cost of importing torch.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        # numpy has no bfloat16; float32 holds every float16/bfloat16 value exactly.
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy(), "<tensor>"
    if isinstance(source, np.ndarray):
        return source, "<array>"
    raise AudioError(
        f"cannot load audio from a {type(source).__name__}; "
        "pass a path, bytes, a numpy array or a torch tensor"
    )


def _whole_hz(sample_rate: object, name: str) -> int:
    try:
        return operator.index(sample_rate)
    except TypeError:
        raise AudioError(f"sample_rate={sample_rate!r} for {name} must be a whole number of Hz") from None


def _frames_by_channels(array: np.ndarray, name: str) -> np.ndarray:
    """(N,), (N, C) or (C, N) -> (N, C) by the rule in load_audio's docstring."""
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        rows, cols = array.shape
        if cols <= MAX_ARRAY_CHANNELS:
            return array
        if rows <= MAX_ARRAY_CHANNELS:
            return array.T
    raise AudioError(
        f"{name} has shape {tuple(array.shape)}; pass (samples,), (samples, channels) or "
        f"(channels, samples) with at most {MAX_ARRAY_CHANNELS} channels"
    )


def _to_float32(frames: np.ndarray, name: str) -> np.ndarray:
    if frames.dtype in _INT_SCALES:
        # Dividing by a power of two is exact, so casting first loses nothing more than float32 does.
        return frames.astype(np.float32) / np.float32(_INT_SCALES[frames.dtype])
    if frames.dtype.kind == "f":
        return frames.astype(np.float32, copy=False)
    raise AudioError(f"{name} has dtype {frames.dtype}; pass float samples in [-1, 1] or int16/int32 PCM")


def _downmix(frames: np.ndarray, name: str) -> np.ndarray:
    if frames.shape[1] == 0:
        raise AudioError(f"{name} has zero channels; pass at least one channel of samples")
    return frames.mean(axis=1, dtype=np.float32)


def _check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise AudioError(f"{name} contains NaN or Inf samples; repair or drop this audio")


def _check_partial_read(samples: np.ndarray, name: str) -> None:
    _check_finite(samples, name)
    if (peak := float(np.abs(samples).max(initial=0.0))) > INT16_LIKE_PEAK:
        raise AudioError(
            f"{name} has float samples far outside [-1, 1] (peak {peak:.4g}); "
            "rescale the file to [-1, 1] or read it whole with load_audio"
        )


def _fix_int16_scale(samples: np.ndarray, name: str) -> np.ndarray:
    peak = float(np.abs(samples).max(initial=0.0))
    if peak <= INT16_LIKE_PEAK:
        return samples
    if peak > INT16_SCALE:
        raise AudioError(f"{name} peaks at {peak:.4g}, far outside [-1, 1]; pass float samples in [-1, 1]")
    message = f"{name} peaks at {peak:.0f}: treated as unscaled int16 and multiplied by 1/32768"
    warnings.warn(message, stacklevel=3)  # points at the caller of load_audio
    return samples / np.float32(INT16_SCALE)


def _check_rate(rate: int, name: str) -> int:
    if rate < FILL_ZERO_RATE:
        raise AudioError(
            f"{name} has sample rate {rate} Hz, below the {FILL_ZERO_RATE} Hz the model needs; "
            "use a recording at 8 kHz or more"
        )
    return rate


def _check_length(n: int, rate: int, name: str) -> None:
    if n == 0:
        raise AudioError(f"{name} contains no audio samples; pass non-empty audio")
    min_n = rate * WINDOW_MS // 1000
    if n < min_n:
        raise AudioError(
            f"{name} is too short: {n} samples at {rate} Hz, "
            f"under one {WINDOW_MS} ms window ({min_n} samples); pass longer audio"
        )


def _to_model_rate(samples: np.ndarray, rate: int, name: str, keep_8k: bool) -> Waveform:
    _check_rate(rate, name)
    out_rate = FILL_ZERO_RATE if keep_8k and rate == FILL_ZERO_RATE else SAMPLE_RATE
    if len(samples) and rate != out_rate:
        samples = soxr.resample(samples, rate, out_rate, quality=RESAMPLE_QUALITY)
    _check_length(len(samples), out_rate, name)
    return Waveform(np.ascontiguousarray(samples, dtype=np.float32), out_rate, name)
