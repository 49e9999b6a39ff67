"""Issue 5's segmentation acceptance on the ~2 min versions of ``eval/bench/vad_acceptance.py``'s two files.

File a: real speech (jfk), espeak-ng sentences, long silences, a sustained chord (with tremolo) and a
drum pattern. File b (so that nothing is tuned to a): other sentences and voices at other levels,
piano-like chords, a hum, noise bursts and a noise floor. Detectors run with ``pad_s=0`` so edges are
measured before padding. A target a detector misses is a strict xfail carrying the measured numbers:
it starts failing (and must become a plain assert) the day the detector meets it. Targets are never
loosened.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from speechkit.audio.vad import VadOptions, detect_speech_samples
from speechkit.testing.audio import jfk_path
from speechkit.testing.corpora import has_speech_synthesis

_SPEC = importlib.util.spec_from_file_location(
    "vad_acceptance", Path(__file__).parents[1] / "eval" / "bench" / "vad_acceptance.py"
)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["vad_acceptance"] = bench  # its dataclasses look their module up there
_SPEC.loader.exec_module(bench)

pytestmark = [
    pytest.mark.skipif(not has_speech_synthesis(), reason="espeak-ng is not installed"),
    pytest.mark.skipif(jfk_path() is None, reason="shared JFK clip not present"),
]

EDGE_TARGET_S = 0.1
DEFAULT = VadOptions().method
FILES = sorted(bench.BUILDERS)


@pytest.fixture(scope="module", params=FILES)
def scores(request) -> dict[str, object]:
    test = bench.BUILDERS[request.param](short=True)
    assert 100 < len(test.samples) / bench.SAMPLE_RATE < 160 and len(test.speech) == 4
    return {
        method: bench.score(detect_speech_samples(test.samples, VadOptions(method=method, pad_s=0)), test.speech)
        for method in bench.available_methods()
    }


def _only(method: str, scores: dict) -> object:
    if method not in scores:
        pytest.skip(f"{method} is not installed")
    return scores[method]


@pytest.mark.parametrize("method", bench.VAD_METHODS)
def test_detector_covers_every_speech_region(method, scores):
    s = _only(method, scores)
    assert s.covered == s.regions


@pytest.mark.parametrize("method", [DEFAULT, "silero"])
def test_no_segment_in_silence_or_music(method, scores):
    s = _only(method, scores)
    assert (s.spurious, s.spurious_s) == (0, 0.0)
    assert s.fa_s < 0.2  # only edge overshoot of real detections (measured 0.02-0.08 s)


def test_webrtc_alone_fires_on_music(scores):
    assert scores["webrtc"].spurious_s > 30  # why a second line of defence exists (measured 47 s and 67 s)


@pytest.mark.parametrize("method", ["webrtc", DEFAULT])
def test_edges_within_target(method, scores):
    assert scores[method].max_edge_s <= EDGE_TARGET_S  # measured 0.062 s (a), 0.010 s (b)


def test_silero_edges_within_target(scores, request):
    if "[b]" in request.node.name:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="measured on file b: silero starts es+f1's sentence 0.48 s late and ends the quieter jfk "
                "clip 0.40 s early (before its trailing noise); 0.062 s on file a",
            )
        )
    assert _only("silero", scores).max_edge_s <= EDGE_TARGET_S
