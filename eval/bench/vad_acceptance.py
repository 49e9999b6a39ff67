"""Long-form acceptance for speech segmentation: coverage, false alarms and edge error per detector.

Builds a test file of real speech (the jfk clip), espeak-ng sentences in several languages, long
silences, a sustained chord and a percussive music-like track, keeps the true speech intervals,
runs every detector with ``pad_s=0`` (edges are measured before padding) and prints per detector:

- covered: true speech regions overlapped by at least one segment, of all regions;
- fa_s: segment seconds outside every true region (includes edge overshoot of real detections);
- spurious: segments overlapping no true region, and their seconds (detections in silence/music);
- max_edge_s: the largest |first segment start - true start| or |last segment end - true end| over
  the true regions (target <= 0.1 s).

True intervals: each speech clip's bounds trimmed to where |x| exceeds ``EDGE_THRESHOLD``.

    python eval/bench/vad_acceptance.py [--short]   # ~10 min file; --short: ~2 min (the CI test's)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.audio.vad import VAD_METHODS, SpeechSegment, VadOptions, detect_speech_samples
from speechkit.testing.audio import jfk_path, sine
from speechkit.testing.corpora import clip

EDGE_THRESHOLD = 0.05  # |x| above this is speech when trimming clips (above jfk's noise floor peaks)

SENTENCES = (
    ("en", "The quick brown fox jumps over the lazy dog near the river bank."),
    ("de", "Der Zug nach Berlin fährt heute eine halbe Stunde später ab."),
    ("fr", "Nous avons rendez-vous demain matin devant la gare centrale."),
    ("es", "El mercado abre temprano y cierra poco después del mediodía."),
    ("it", "La riunione di domani è stata spostata al pomeriggio."),
    ("pt", "Ela comprou pão fresco na padaria da esquina."),
    ("en", "Please send the quarterly report to everyone before Friday."),
    ("de", "Im Winter ist es hier oft kalt und sehr windig."),
)


@dataclass(frozen=True)
class TestFile:
    samples: np.ndarray  # (N,) float32 at SAMPLE_RATE
    speech: list[tuple[float, float]]  # true speech intervals in seconds, sorted


def chord(duration_s: float) -> np.ndarray:
    """A held A minor chord on an organ-like tone (three notes, six harmonics) with a slow tremolo."""
    notes = (220.0, 261.63, 329.63)
    x = sum(sine(duration_s, f * k, amplitude=0.12 / k) for f in notes for k in range(1, 7))
    t = np.arange(len(x)) / SAMPLE_RATE
    return (x * (1 + 0.15 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def percussion(duration_s: float, seed: int = 0) -> np.ndarray:
    """A 120 bpm drum pattern: kick (falling 110->50 Hz sine) on beats, snare (noise) on 2 and 4, hi-hat on eighths."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * SAMPLE_RATE))
    beat = SAMPLE_RATE // 2
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


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _trimmed(x: np.ndarray) -> tuple[int, int]:
    above = np.flatnonzero(np.abs(x) > EDGE_THRESHOLD)
    return int(above[0]), int(above[-1]) + 1


def build(short: bool = False) -> TestFile:
    """The test file: ~10 min, or ~2 min with ``short`` (jfk, three sentences, shorter music and silences)."""
    jfk = load_audio(jfk_path()).samples
    speech = [jfk] + [clip(i, text, lang) for i, (lang, text) in enumerate(SENTENCES[: 3 if short else None])]
    k = 0.25 if short else 1.0  # scales silences and music
    gaps = [30, 8, 60, 4, 45, 12, 20, 3, 50]  # seconds of silence after each speech clip, cycled
    music = {1: ("chord", 90), 3: ("percussion", 90), 5: ("chord", 40), 7: ("percussion", 40)}
    parts = [_silence(10 * k)]
    truth = []
    offset = len(parts[0])
    for i, x in enumerate(speech):
        a, b = _trimmed(x)
        truth.append(((offset + a) / SAMPLE_RATE, (offset + b) / SAMPLE_RATE))
        pieces = [x, _silence(max(3.0, gaps[i % len(gaps)] * k))]
        if i in music or (short and i == 2):
            kind, seconds = music.get(i, ("percussion", 90))
            signal = chord if kind == "chord" else percussion
            pieces += [signal(seconds * k), _silence(max(3.0, 15 * k))]
        for p in pieces:
            parts.append(p)
            offset += len(p)
    return TestFile(np.concatenate(parts), truth)


@dataclass(frozen=True)
class Score:
    covered: int
    regions: int
    fa_s: float
    spurious: int
    spurious_s: float
    max_edge_s: float


def score(segments: list[SpeechSegment], truth: list[tuple[float, float]]) -> Score:
    """Coverage, false alarms and edge error of ``segments`` against the true intervals."""
    covered, max_edge = 0, 0.0
    for a, b in truth:
        hits = [s for s in segments if s.start < b and s.end > a]
        if hits:
            covered += 1
            max_edge = max(max_edge, abs(hits[0].start - a), abs(hits[-1].end - b))
    inside = sum(max(0.0, min(s.end, b) - max(s.start, a)) for s in segments for a, b in truth)
    spurious = [s for s in segments if not any(s.start < b and s.end > a for a, b in truth)]
    return Score(
        covered, len(truth), sum(s.duration for s in segments) - inside, len(spurious),
        sum(s.duration for s in spurious), max_edge,
    )  # fmt: skip


def available_methods() -> list[str]:
    has_silero = importlib.util.find_spec("silero_vad") is not None
    return [m for m in VAD_METHODS if m != "silero" or has_silero]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the ~2 min version the CI test uses")
    args = parser.parse_args()
    test = build(args.short)
    duration = len(test.samples) / SAMPLE_RATE
    speech_s = sum(b - a for a, b in test.speech)
    print(f"file: {duration:.1f} s, {len(test.speech)} speech regions ({speech_s:.1f} s)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'detector':<22}{'covered':>9}{'fa_s':>8}{'spurious':>10}{'spur_s':>8}{'max_edge_s':>12}{'time_s':>8}")
    for method in available_methods():
        t0 = time.perf_counter()
        segments = detect_speech_samples(test.samples, VadOptions(method=method, pad_s=0))
        seconds = time.perf_counter() - t0
        s = score(segments, test.speech)
        print(
            f"{method:<22}{f'{s.covered}/{s.regions}':>9}{s.fa_s:>8.2f}{s.spurious:>10}{s.spurious_s:>8.2f}"
            f"{s.max_edge_s:>12.3f}{seconds:>8.1f}"
        )


if __name__ == "__main__":
    main()
