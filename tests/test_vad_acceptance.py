"""Issue 5's segmentation acceptance on the ~2 min version of ``eval/bench/vad_acceptance.py``'s file.

Real speech (jfk), espeak-ng sentences, long silences, a sustained chord (with tremolo) and a drum
pattern; detectors run with ``pad_s=0`` so edges are measured before padding. The targets the
detectors do not meet yet are strict xfails carrying the measured numbers: they start failing (and
must be turned into plain asserts) the day a detector meets them. The target is never loosened.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from speechkit.audio.vad import VadOptions, detect_speech_samples
from speechkit.testing.corpora import has_speech_synthesis

_SPEC = importlib.util.spec_from_file_location(
    "vad_acceptance", Path(__file__).parents[1] / "eval" / "bench" / "vad_acceptance.py"
)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["vad_acceptance"] = bench  # its dataclasses look their module up there
_SPEC.loader.exec_module(bench)

pytestmark = pytest.mark.skipif(not has_speech_synthesis(), reason="espeak-ng is not installed")

EDGE_TARGET_S = 0.1
DEFAULT = VadOptions().method


@pytest.fixture(scope="module")
def scores() -> dict[str, object]:
    test = bench.build(short=True)
    assert 100 < len(test.samples) / bench.SAMPLE_RATE < 160 and len(test.speech) == 4
    return {
        method: bench.score(detect_speech_samples(test.samples, VadOptions(method=method, pad_s=0)), test.speech)
        for method in bench.available_methods()
    }


def _only(method: str, scores: dict) -> object:
    if method not in scores:
        pytest.skip(f"{method} is not installed")
    return scores[method]


@pytest.mark.parametrize("method", ["webrtc", "silero"])
def test_detector_covers_every_speech_region(method, scores):
    s = _only(method, scores)
    assert s.covered == s.regions


def test_silero_has_no_false_alarms_in_silence_or_music(scores):
    s = _only("silero", scores)
    assert (s.spurious, s.spurious_s) == (0, 0.0)
    assert s.fa_s < 0.5  # only edge overshoot of real detections (measured 0.25 s)


def test_webrtc_alone_fires_on_music(scores):
    assert scores["webrtc"].spurious_s > 30  # why a second line of defence exists (measured 67 s of 68 s music)


@pytest.mark.xfail(strict=True, reason="measured: the music filter drops espeak-ng speech (3/4 regions covered)")
def test_default_detector_covers_every_speech_region(scores):
    s = scores[DEFAULT]
    assert s.covered == s.regions


@pytest.mark.xfail(
    strict=True, reason="measured: the music filter passes the tremolo chord and the drums (8 segments, 44 s)"
)
def test_default_detector_has_no_false_alarms(scores):
    assert scores[DEFAULT].spurious_s == 0.0


@pytest.mark.xfail(strict=True, reason="measured max edge error: webrtc 0.22 s, default 1.66 s, silero 0.17 s")
@pytest.mark.parametrize("method", bench.VAD_METHODS)
def test_edges_within_target(method, scores):
    assert _only(method, scores).max_edge_s <= EDGE_TARGET_S
