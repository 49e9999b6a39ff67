"""Synthetic music and noise that a speech detector must reject, for VAD tests and the acceptance files.

Every generator returns (N,) float32 at ``SAMPLE_RATE`` with N = round(duration_s * SAMPLE_RATE) and is
deterministic: the same arguments give the same samples. Each one stresses a different cue a simple
detector might take for speech: energy (a held chord), syllable-rate loudness changes (tremolo), onsets
and broadband bursts (drums, noise bursts), decaying harmonic notes (piano) and a voiced, pitched,
melodic source without articulation (a hum).
"""

from __future__ import annotations

import numpy as np

from speechkit.audio import SAMPLE_RATE
from speechkit.testing.audio import sine

A_MINOR = (220.0, 261.63, 329.63)


def chord(
    duration_s: float, notes: tuple[float, ...] = A_MINOR, tremolo_hz: float = 0.5, tremolo_depth: float = 0.15
) -> np.ndarray:
    """A held chord on an organ-like tone (six harmonics a note, 1/k) with a sinusoidal tremolo."""
    x = sum(sine(duration_s, f * k, amplitude=0.12 / k) for f in notes for k in range(1, 7))
    t = np.arange(len(x)) / SAMPLE_RATE
    return (x * (1 + tremolo_depth * np.sin(2 * np.pi * tremolo_hz * t))).astype(np.float32)


def drums(duration_s: float, seed: int = 0, bpm: float = 120.0) -> np.ndarray:
    """A drum pattern: kick (falling 110->50 Hz sine) on beats, snare (noise) on 2 and 4, hi-hat on eighths."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * SAMPLE_RATE))
    beat = round(60 / bpm * SAMPLE_RATE)
    t = np.arange(beat) / SAMPLE_RATE
    kick = 0.6 * np.sin(2 * np.pi * np.cumsum(50 + 60 * np.exp(-t * 30)) / SAMPLE_RATE) * np.exp(-t * 12)
    for i, start in enumerate(range(0, len(out), beat // 2)):
        n = min(beat, len(out) - start)
        hat = rng.standard_normal(n) * np.exp(-np.arange(n) / 150)
        hat = np.diff(hat, prepend=0.0)  # high-passed: a hi-hat's hiss
        out[start : start + n] += 0.08 * hat
        if i % 2 == 0:
            out[start : start + n] += kick[:n]
        if i % 4 == 2:
            out[start : start + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / 1200)
    return np.clip(out, -1, 1).astype(np.float32)


def piano_chords(duration_s: float, seed: int = 0) -> np.ndarray:
    """Struck triads, one every 0.8-2 s: eight harmonics a note, each decaying faster than the one below."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * SAMPLE_RATE))
    roots = (174.61, 196.0, 220.0, 246.94, 261.63)
    pos = 0
    while pos < len(out):
        n = min(round(rng.uniform(0.8, 2.0) * SAMPLE_RATE), len(out) - pos)
        t = np.arange(n) / SAMPLE_RATE
        root = roots[rng.integers(len(roots))]
        for ratio in (1.0, 1.26, 1.5):  # major triad
            for k in range(1, 9):
                out[pos : pos + n] += np.sin(2 * np.pi * root * ratio * k * t) * np.exp(-t * (1.5 + 0.8 * k)) / k
        pos += n
    return (0.6 * out / np.abs(out).max()).astype(np.float32)


def hum(duration_s: float, seed: int = 0) -> np.ndarray:
    """A hummed melody ("mmm", no vowels): notes of 0.25-0.7 s on a scale from 130 Hz, 5.5 Hz vibrato.

    Strongly voiced with a smooth pitch track, like speech, but its spectrum (harmonics falling as
    1/k^2, no formants) never changes shape: nothing is articulated.
    """
    rng = np.random.default_rng(seed)
    n = round(duration_s * SAMPLE_RATE)
    f0, gain = np.zeros(n), np.ones(n)
    pos = 0
    while pos < n:
        m = min(round(rng.uniform(0.25, 0.7) * SAMPLE_RATE), n - pos)
        f0[pos : pos + m] = 130.0 * 2 ** (rng.integers(0, 8) / 12)
        ramp = np.minimum(np.arange(m), m - np.arange(m)) / (0.05 * SAMPLE_RATE)  # 50 ms dips between notes
        gain[pos : pos + m] = 0.3 + 0.7 * np.minimum(1.0, ramp)
        pos += m
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k**2 for k in range(1, 12)) * gain
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def noise_bursts(duration_s: float, seed: int = 0) -> np.ndarray:
    """White-noise bursts of 0.2-1.5 s at random levels (std 0.05-0.3), 0.2-1 s apart."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * SAMPLE_RATE))
    pos = 0
    while pos < len(out):
        m = min(round(rng.uniform(0.2, 1.5) * SAMPLE_RATE), len(out) - pos)
        out[pos : pos + m] = rng.uniform(0.05, 0.3) * rng.standard_normal(m)
        pos += m + round(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
    return out.astype(np.float32)
