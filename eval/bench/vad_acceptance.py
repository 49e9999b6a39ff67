"""Long-form acceptance for speech segmentation: coverage, false alarms and edge error per detector.

Two ~10 minute test files, so that no detector is tuned to one of them:

- ``a``: real speech (the jfk clip), espeak-ng sentences in six languages, long silences, a held chord
  with a slow tremolo and a 120 bpm drum pattern (the file of issue 5's acceptance);
- ``b``: the jfk clip and eight other espeak-ng sentences in other voices (female, Klatt), each at its
  own level (-9 to 0 dB), other silences, piano-like struck chords, a hummed melody, white-noise
  bursts, a 95 bpm drum pattern and a chord with a 4 Hz (syllable-rate) tremolo, over a -60 dBFS
  noise floor.

Every detector runs with ``pad_s=0`` (edges are measured before padding); printed per detector:

- covered: true speech regions overlapped by at least one segment, of all regions;
- fa_s: segment seconds outside every true region (includes edge overshoot of real detections);
- spurious: segments overlapping no true region, and their seconds (detections in silence/music);
- max_edge_s: the largest |first segment start - true start| or |last segment end - true end| over
  the true regions (target <= 0.1 s).

True intervals: each speech clip's bounds trimmed to where |x| exceeds ``EDGE_THRESHOLD``, measured
on the clip at its own level (before file b's gains), so the truth does not move with loudness.

    python eval/bench/vad_acceptance.py [--file a|b] [--short]   # --short: ~2 min versions (the CI test's)
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
from speechkit.testing.audio import jfk_path
from speechkit.testing.corpora import clip, speak
from speechkit.testing.music import chord, drums, hum, noise_bursts, piano_chords

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

# File b: other sentences, spoken by espeak-ng voice variants (language+variant).
SENTENCES_B = (
    ("en-gb+f4", "The library stays open late on Thursdays during the exam season."),
    ("de+m2", "Meine Schwester wohnt seit zwei Jahren in einer kleinen Wohnung in Hamburg."),
    ("es+f1", "Si llueve mañana, dejaremos la excursión para la próxima semana."),
    ("fr+m4", "Il faut arroser les tomates tous les soirs quand il fait chaud."),
    ("en-us+klatt2", "Turn left at the second traffic light and park behind the bakery."),
    ("it+m3", "Ho dimenticato le chiavi della macchina sul tavolo della cucina."),
    ("pt+f5", "O comboio das oito chega sempre atrasado à estação."),
    ("nl+f2", "We hebben gisteren de hele middag in de tuin gewerkt."),
)


@dataclass(frozen=True)
class TestFile:
    samples: np.ndarray  # (N,) float32 at SAMPLE_RATE
    speech: list[tuple[float, float]]  # true speech intervals in seconds, sorted


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _trimmed(x: np.ndarray) -> tuple[int, int]:
    above = np.flatnonzero(np.abs(x) > EDGE_THRESHOLD)
    return int(above[0]), int(above[-1]) + 1


def _assemble(
    clips: list[np.ndarray],
    gaps_s: list[float],
    music: dict[int, np.ndarray],
    lead_s: float,
    after_music_s: float,
    gains: np.ndarray | None = None,
) -> TestFile:
    """lead silence, then per clip: the clip (times its gain), its gap, and music[i] plus a silence if any."""
    parts, truth = [_silence(lead_s)], []
    offset = len(parts[0])
    for i, x in enumerate(clips):
        a, b = _trimmed(x)
        truth.append(((offset + a) / SAMPLE_RATE, (offset + b) / SAMPLE_RATE))
        pieces = [x if gains is None else (x * gains[i]).astype(np.float32), _silence(gaps_s[i % len(gaps_s)])]
        if i in music:
            pieces += [music[i], _silence(after_music_s)]
        for p in pieces:
            parts.append(p)
            offset += len(p)
    return TestFile(np.concatenate(parts), truth)


def build(short: bool = False) -> TestFile:
    """File a: ~10 min, or ~2 min with ``short`` (jfk, three sentences, shorter music and silences)."""
    jfk = load_audio(jfk_path()).samples
    speech = [jfk] + [clip(i, text, lang) for i, (lang, text) in enumerate(SENTENCES[: 3 if short else None])]
    k = 0.25 if short else 1.0  # scales silences and music
    gaps = [max(3.0, g * k) for g in (30, 8, 60, 4, 45, 12, 20, 3, 50)]  # after each speech clip, cycled
    kinds = {1: ("chord", 90), 3: ("percussion", 90), 5: ("chord", 40), 7: ("percussion", 40)}
    if short:
        kinds[2] = ("percussion", 90)
    music = {
        i: chord(seconds * k) if kind == "chord" else drums(seconds * k)
        for i, (kind, seconds) in kinds.items() if i < len(speech)
    }  # fmt: skip
    return _assemble(speech, gaps, music, 10 * k, max(3.0, 15 * k))


def build_b(short: bool = False) -> TestFile:
    """File b: ~10 min, or ~2 min with ``short`` (jfk, three sentences, hum, piano and noise bursts)."""
    jfk = load_audio(jfk_path()).samples
    speech = [jfk] + [speak(text, voice) for voice, text in SENTENCES_B[: 3 if short else None]]
    k = 0.25 if short else 1.0
    gaps = [max(3.0, g * k) for g in (20, 5, 40, 6, 35, 15, 25, 4, 30)]
    c_major = (261.63, 329.63, 392.0)
    music = {
        0: piano_chords(80 * k, seed=11),
        2: hum(60 * k, seed=12),
        3: noise_bursts(50 * k, seed=13),
        4: drums(40 * k, seed=14, bpm=95),
        6: chord(45 * k, c_major, tremolo_hz=4.0, tremolo_depth=0.6),
        8: hum(30 * k, seed=15),
    }
    music = {i: x for i, x in music.items() if i < len(speech)}
    rng = np.random.default_rng(5)
    gains = 10 ** (rng.uniform(-9, 0, len(speech)) / 20)
    test = _assemble(speech, gaps, music, 7 * k, max(3.0, 10 * k), gains)
    floor = 0.001 * rng.standard_normal(len(test.samples))  # -60 dBFS
    return TestFile((test.samples + floor).astype(np.float32), test.speech)


BUILDERS = {"a": build, "b": build_b}


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
    parser.add_argument("--file", choices=sorted(BUILDERS), action="append", help="test file(s) (default: both)")
    parser.add_argument("--short", action="store_true", help="the ~2 min versions the CI test uses")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs")
    for name in args.file or sorted(BUILDERS):
        test = BUILDERS[name](args.short)
        duration = len(test.samples) / SAMPLE_RATE
        speech_s = sum(b - a for a, b in test.speech)
        print(f"\nfile {name}: {duration:.1f} s, {len(test.speech)} speech regions ({speech_s:.1f} s)")
        print(f"{'detector':<22}{'covered':>9}{'fa_s':>8}{'spurious':>10}{'spur_s':>8}{'max_edge_s':>12}{'cpu_s':>8}")
        for method in available_methods():
            t0 = time.process_time()
            segments = detect_speech_samples(test.samples, VadOptions(method=method, pad_s=0))
            seconds = time.process_time() - t0
            s = score(segments, test.speech)
            print(
                f"{method:<22}{f'{s.covered}/{s.regions}':>9}{s.fa_s:>8.2f}{s.spurious:>10}{s.spurious_s:>8.2f}"
                f"{s.max_edge_s:>12.3f}{seconds:>8.1f}"
            )


if __name__ == "__main__":
    main()
