"""Speech segmentation: detectors on synthetic and real audio, segment invariants, bounded memory."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soundfile as sf

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.audio.vad import SpeechSegment, VadOptions, detect_speech, detect_speech_samples, segment_scores
from speechkit.audio.vad_frames import FrameScorer, FrameScores, music_filter
from speechkit.errors import ConfigError
from speechkit.testing.audio import jfk_path, noise, sine, speechlike

HAS_SILERO = importlib.util.find_spec("silero_vad") is not None


def chord(duration_s: float) -> np.ndarray:
    """C major held on an organ-like tone: three notes with 7 harmonics each."""
    notes = (261.63, 329.63, 392.0)
    return sum(sine(duration_s, f * k, amplitude=0.15 / k) for f in notes for k in range(1, 8)).astype(np.float32)


def clicks(duration_s: float, seed: int = 0) -> np.ndarray:
    """A drum-like click track: decaying noise bursts four times a second."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * SAMPLE_RATE))
    for start in range(0, len(out), SAMPLE_RATE // 4):
        n = min(2400, len(out) - start)
        out[start : start + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / 400)
    return out.astype(np.float32)


def silence(duration_s: float) -> np.ndarray:
    return np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)


def flagged_fraction(x: np.ndarray, filtered: bool) -> float:
    scorer = FrameScorer("webrtc", 3, 30, 0.5)
    scorer.feed(x)
    scores = scorer.finish()
    speech = music_filter(scores, 1.0, 4.0, 6.0) if filtered else scores.speech
    return float(speech.mean())


def covered(segments: list[SpeechSegment]) -> float:
    return sum(s.duration for s in segments)


def check_invariants(segments: list[SpeechSegment], duration: float, max_s: float) -> None:
    for s in segments:
        assert 0 <= s.start < s.end <= duration + 1e-9
        assert s.duration <= max_s + 1e-9
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end <= b.start


@pytest.mark.parametrize(
    ("signal", "webrtc_min"),
    [(chord(10), 0.99), (noise(10, 0, amplitude=0.05), 0.9), (clicks(10), 0.7)],
    ids=["chord", "noise", "clicks"],
)
def test_music_filter_rejects_what_webrtc_flags(signal, webrtc_min):
    assert flagged_fraction(signal, filtered=False) >= webrtc_min  # why the filter exists
    assert flagged_fraction(signal, filtered=True) == 0.0
    assert detect_speech_samples(signal) == []


@pytest.mark.parametrize("method", ["webrtc", "webrtc+music-filter"])
def test_silence_and_pure_tone_give_no_segments(method):
    for x in (silence(5), sine(5, 440)):
        assert detect_speech_samples(x, VadOptions(method=method)) == []


@pytest.mark.parametrize("method", ["webrtc", "webrtc+music-filter"])
def test_speechlike_is_detected_whole(method):
    x = np.concatenate([silence(2), speechlike(6, 1), silence(2)])
    segments = detect_speech_samples(x, VadOptions(method=method, pad_s=0))
    assert len(segments) == 1
    # Bursts start at 2.0 s (Hann onset) and end by 8.0 s; edges within 0.1 s.
    assert abs(segments[0].start - 2.0) <= 0.1 and abs(segments[0].end - 8.0) <= 0.1


def test_mixed_file_edges_and_no_false_alarms():
    x = np.concatenate(
        [silence(2), speechlike(6, 1), silence(3), chord(6), silence(2), clicks(5), silence(2), speechlike(5, 2)]
        + [silence(1), noise(4, 3, amplitude=0.03), silence(1)]
    )
    truth = [(2.0, 8.0), (26.0, 31.0)]
    segments = detect_speech_samples(x, VadOptions(pad_s=0))
    assert [(round(s.start, 2), round(s.end, 2)) for s in segments] == [(1.98, 8.07), (26.01, 31.05)]
    for s, (start, end) in zip(segments, truth, strict=True):
        assert abs(s.start - start) <= 0.1 and abs(s.end - end) <= 0.1
    # Default padding of 0.2 s widens them and nothing else.
    padded = detect_speech_samples(x)
    assert [(s.start, s.end) for s in padded] == [(1.78, 8.27), (25.81, 31.25)]


@pytest.mark.skipif(jfk_path() is None, reason="shared JFK clip not present")
@pytest.mark.parametrize("method", ["webrtc", "webrtc+music-filter", "silero"])
def test_real_speech_is_detected(method):
    if method == "silero" and not HAS_SILERO:
        pytest.skip("silero-vad not installed")
    x = load_audio(jfk_path()).samples
    segments = detect_speech(jfk_path(), VadOptions(method=method))
    check_invariants(segments, len(x) / SAMPLE_RATE, 30.0)
    # Speech runs from ~0.3 s to ~10.6 s of the 11 s clip.
    assert covered(segments) >= 9.5
    assert segments[0].start <= 0.6 and segments[-1].end >= 10.3


@pytest.mark.skipif(not HAS_SILERO, reason="silero-vad not installed")
def test_silero_rejects_music_and_keeps_torch_threads():
    import torch

    before = torch.get_num_threads()
    assert detect_speech_samples(np.concatenate([chord(5), clicks(5)]), VadOptions(method="silero")) == []
    assert torch.get_num_threads() == before


def test_missing_detector_package_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "silero_vad", None)  # makes the import fail
    with pytest.raises(ConfigError) as err:
        detect_speech_samples(silence(1), VadOptions(method="silero"))
    assert str(err.value) == (
        "the silero_vad module is missing; pip install 'speechkit[silero]' (or choose --vad webrtc+music-filter)"
    )


def scores_from(flags: list[int] | np.ndarray, energy_db: np.ndarray | None = None) -> FrameScores:
    speech = np.asarray(flags, dtype=bool)
    energy = np.full(len(speech), -20.0, np.float32) if energy_db is None else energy_db.astype(np.float32)
    return FrameScores(speech, energy, np.zeros(len(speech), np.float32), len(speech) / 100)


def frames(*runs: tuple[int, float]) -> np.ndarray:
    """(flag, seconds) runs on the 10 ms grid."""
    return np.concatenate([np.full(round(s * 100), f, dtype=bool) for f, s in runs])


def test_gap_fill_min_speech_and_shared_padding():
    opts = VadOptions(
        method="webrtc", min_silence_s=0.3, min_speech_s=0.25, pad_s=0.2, max_segment_s=2, split_search_s=1
    )
    flags = frames((0, 1), (1, 0.6), (0, 0.2), (1, 0.6), (0, 1), (1, 0.1), (0, 1), (1, 1), (0, 0.3), (1, 1), (0, 1))
    got = [(s.start, s.end) for s in segment_scores(scores_from(flags), opts)]
    # 0.2 s gap filled; 0.1 s blip dropped; the 0.3 s gap is shared at its middle, not double-padded
    # (and the two halves stay apart: joined they would exceed max_segment_s).
    assert got == [(0.8, 2.6), (4.3, 5.65), (5.65, 7.0)]


def test_merge_joins_close_segments_up_to_the_limit():
    opts = VadOptions(method="webrtc", pad_s=0, max_merge_gap_s=1.0, max_segment_s=10, split_search_s=2)
    flags = frames((1, 4), (0, 0.5), (1, 4), (0, 0.5), (1, 4), (0, 1.5), (1, 1))
    got = [(s.start, s.end) for s in segment_scores(scores_from(flags), opts)]
    assert got == [(0.0, 8.5), (9.0, 13.0), (14.5, 15.5)]


def test_long_speech_is_split_at_the_quietest_100ms():
    energy = np.full(7000, -20.0)
    energy[2700:2710] = -45.0  # quiet at 27.0-27.1 s: inside the search range [25, 30] s
    energy[1000:1010] = -60.0  # quieter, but too early: a cut there would waste the segment
    energy[5500:5510] = -40.0
    got = segment_scores(scores_from(np.ones(7000), energy), VadOptions(method="webrtc", pad_s=0))
    assert [(s.start, s.end) for s in got] == [(0.0, 27.05), (27.05, 55.05), (55.05, 70.0)]


@pytest.mark.parametrize("seed", range(5))
def test_segment_invariants_on_random_decisions(seed):
    rng = np.random.default_rng(seed)
    runs = [(i % 2, rng.choice([0.05, 0.2, 0.5, 2.0, 12.0, 40.0])) for i in range(60)]
    flags = frames(*runs)
    scores = scores_from(flags, rng.uniform(-60, -10, len(flags)))
    opts = VadOptions(method="webrtc", max_segment_s=20, split_search_s=4)
    segments = segment_scores(scores, opts)
    check_invariants(segments, scores.duration, 20)
    # Every speech run that survives min_speech_s is inside some segment.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    for a, b in zip(edges[::2] / 100, edges[1::2] / 100, strict=True):
        if b - a >= opts.min_speech_s:
            assert any(s.start <= a + 1e-9 and s.end >= a for s in segments)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_two_hour_file_streams_in_bounded_memory(tmp_path):
    try:  # "5" resets the peak resident size (VmHWM) to the current one; Linux only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    path = tmp_path / "two_hours.flac"
    minute = np.zeros(60 * SAMPLE_RATE, np.int16)
    words = (speechlike(4, 0) * 32767).astype(np.int16)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for m in range(120):
            block = minute.copy()
            if m % 10 == 0:
                block[20 * SAMPLE_RATE : 24 * SAMPLE_RATE] = words
            f.write(block)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    segments = detect_speech(path)
    growth = (_status_kb("VmHWM") - before) * 1024
    assert [round(s.start) for s in segments] == [600 * k + 20 for k in range(12)]
    waveform_bytes = 7200 * SAMPLE_RATE * 4  # float32: 460 MB
    assert growth < waveform_bytes / 5, f"peak RSS grew by {growth / 1e6:.0f} MB"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pyannote"}, "VAD method 'pyannote' is unknown; choose one of webrtc, webrtc+music-filter, silero"),
        ({"aggressiveness": 4}, "VAD aggressiveness=4 must be 0, 1, 2 or 3"),
        ({"frame_ms": 25}, "VAD frame_ms=25 must be 10, 20 or 30 (webrtcvad's frame sizes)"),
        ({"silero_threshold": 1.0}, "silero_threshold=1.0 must be in (0, 1)"),
        ({"pad_s": -0.1}, "pad_s=-0.1 must be >= 0"),
        ({"min_speech_s": -1}, "min_speech_s=-1 must be >= 0"),
        ({"read_window_s": 0}, "read_window_s=0 must be > 0"),
        ({"music_window_s": 0}, "music_window_s=0 must be > 0"),
        ({"max_segment_s": 0.5}, "max_segment_s=0.5 must be at least 1 s"),
        ({"split_search_s": 30}, "split_search_s=30 must be in [0.1, max_segment_s=30.0)"),
    ],
)
def test_option_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        VadOptions(**kwargs)
    assert str(err.value) == message
