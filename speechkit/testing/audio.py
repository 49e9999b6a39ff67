"""Synthetic audio for tests across speechkit, and the location of the shared real-speech clip.

Every generator returns (N,) float32 at ``sample_rate`` Hz with N = round(duration_s * sample_rate)
and is deterministic: the same arguments give the same samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from speechkit.audio import SAMPLE_RATE


def sine(
    duration_s: float, freq: float, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.5
) -> np.ndarray:
    """A pure tone of ``freq`` Hz with peak ``amplitude``, starting at phase 0."""
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(duration_s: float, seed: int, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.1) -> np.ndarray:
    """Gaussian white noise with standard deviation ``amplitude``."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(duration_s * sample_rate))).astype(np.float32)


def speechlike(duration_s: float, seed: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Syllable-like bursts: harmonic tones with a gliding pitch under a Hann envelope, and pauses.

    Bursts last 0.12-0.30 s with 0.03-0.25 s gaps (about 4 syllables/s, like speech), pitch
    90-250 Hz, harmonics up to 4 kHz falling off as 1/k, plus a faint noise floor. Peak 0.5.
    Not speech to a recogniser, but it has speech's spectral tilt and on/off rhythm, which is
    what feature and padding tests need. Not for speech-detector tests: its spectral envelope never
    moves (nothing is articulated), so the default detector rejects it as music; use
    :func:`speechkit.testing.corpora.talk` (espeak-ng) or the jfk clip there.
    """
    rng = np.random.default_rng(seed)
    n = round(duration_s * sample_rate)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        burst = min(round(rng.uniform(0.12, 0.30) * sample_rate), n - pos)
        f0 = rng.uniform(90, 250) * (1 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, burst))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        harmonics = np.arange(1, int(min(4000, 0.45 * sample_rate) // f0.max()) + 1)
        tone = (np.cos(harmonics[:, None] * phase) / harmonics[:, None]).sum(axis=0)
        out[pos : pos + burst] = np.hanning(burst) * tone
        pos += burst + round(rng.uniform(0.03, 0.25) * sample_rate)
    out *= 0.5 / max(np.abs(out).max(), 1e-9)
    out += 0.003 * rng.standard_normal(n)
    return out.astype(np.float32)


def write_audio(
    path: str | Path,
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write (N,) or (N, channels) samples to an audio file and return its path.

    ``format`` is a libsndfile major format ("WAV", "FLAC", "OGG", "MP3"), inferred from the
    suffix when None; ``subtype`` defaults to the format's default (PCM_16 for WAV and FLAC,
    so float input is quantised; pass "FLOAT" for an exact WAV).
    """
    path = Path(path)
    sf.write(str(path), samples, sample_rate, format=format, subtype=subtype)
    return path


def jfk_path() -> Path | None:
    """The shared 11 s JFK speech clip (44.1 kHz stereo FLAC), or None when it is not there.

    The checkout sits next to ``shared/`` (``<repo>/../shared/data/audio/jfk.flac``); an
    installed copy or a bare CI clone has no such sibling, and tests then skip.
    """
    repo = Path(__file__).resolve().parents[2]
    path = repo.parent / "shared" / "data" / "audio" / "jfk.flac"
    return path if path.is_file() else None
