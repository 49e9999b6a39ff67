"""Speech segmentation: detectors on speech, music and noise, the music filter's features, edge snapping,
segment invariants, bounded memory.

Speech here is real (the jfk clip) or espeak-ng's (``talk``): the synthetic ``speechlike`` bursts have
no articulation (one fixed spectral envelope), and the default detector rightly takes them for music."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from speechkit.audio import SAMPLE_RATE, load_audio, vad_frames
from speechkit.audio.vad import SpeechSegment, VadOptions, detect_speech, detect_speech_samples, segment_scores
from speechkit.audio.vad_filter import music_filter
from speechkit.audio.vad_frames import FrameScorer, FrameScores
from speechkit.errors import ConfigError
from speechkit.testing.audio import jfk_path, noise, sine, speechlike
from speechkit.testing.corpora import has_speech_synthesis, speak, talk
from speechkit.testing.music import chord as tremolo_chord
from speechkit.testing.music import drums, hum, noise_bursts, piano_chords

HAS_SILERO = importlib.util.find_spec("silero_vad") is not None
needs_espeak = pytest.mark.skipif(not has_speech_synthesis(), reason="espeak-ng is not installed")
DEFAULT = VadOptions()


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


def score(x: np.ndarray, chunk: int | None = None) -> FrameScores:
    scorer = FrameScorer("webrtc", 3, 30, 0.5, voice_features=True)
    for i in range(0, len(x), chunk or len(x)):
        scorer.feed(x[i : i + (chunk or len(x))])
    return scorer.finish()


def filtered(scores: FrameScores) -> np.ndarray:
    o = DEFAULT
    return music_filter(scores, o.music_window_s, o.min_voiced_fraction, o.min_articulation, 30)


def flagged_fraction(x: np.ndarray, filter_on: bool) -> float:
    scores = score(x)
    return float((filtered(scores) if filter_on else scores.speech).mean())


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
    [
        (chord(10), 0.99),
        (tremolo_chord(10, tremolo_hz=4.0, tremolo_depth=0.6), 0.99),  # loudness at a syllable rate
        (piano_chords(10), 0.7),
        (hum(10), 0.99),  # voiced, with a smooth melody, but never articulated
        (noise(10, 0, amplitude=0.05), 0.9),
        (noise_bursts(10), 0.65),
        (clicks(10), 0.7),
        (drums(10), 0.75),
        (speechlike(10, 0), 0.7),  # harmonic bursts at a syllable rate, one fixed spectral envelope
    ],
    ids=["chord", "tremolo-chord", "piano", "hum", "noise", "noise-bursts", "clicks", "drums", "speechlike"],
)
def test_music_filter_rejects_what_webrtc_flags(signal, webrtc_min):
    assert flagged_fraction(signal, filter_on=False) >= webrtc_min  # why the filter exists
    assert flagged_fraction(signal, filter_on=True) == 0.0
    assert detect_speech_samples(signal) == []


@pytest.mark.parametrize("method", ["webrtc", "webrtc+music-filter"])
def test_silence_and_pure_tone_give_no_segments(method):
    for x in (silence(5), sine(5, 440)):
        assert detect_speech_samples(x, VadOptions(method=method)) == []


@needs_espeak
@pytest.mark.parametrize("method", ["webrtc", "webrtc+music-filter", "silero"])
def test_speech_is_detected_whole_with_edges_on_the_waveform(method):
    if method == "silero" and not HAS_SILERO:
        pytest.skip("silero-vad not installed")
    x = np.concatenate([silence(2), talk(6, 1), silence(2)])
    segments = detect_speech_samples(x, VadOptions(method=method, pad_s=0))
    # Speech fills 2.0-8.0 s (its first sample is loud within 10 ms); snapped edges land on that grid.
    assert [(s.start, s.end) for s in segments] == [(2.0, 8.0)]


@needs_espeak
def test_mixed_file_edges_and_no_false_alarms():
    x = np.concatenate(
        [silence(2), talk(6, 1), silence(3), chord(6), silence(2), clicks(5), silence(2), talk(5, 2)]
        + [silence(1), noise(4, 3, amplitude=0.03), silence(1)]
    )
    segments = detect_speech_samples(x, VadOptions(pad_s=0))
    assert [(s.start, s.end) for s in segments] == [(2.0, 8.0), (26.0, 31.0)]
    # Default padding of 0.2 s widens them and nothing else.
    padded = detect_speech_samples(x)
    assert [(s.start, s.end) for s in padded] == [(1.8, 8.2), (25.8, 31.2)]


@needs_espeak
def test_speech_next_to_music_keeps_at_most_half_a_window_of_it():
    # No pause between speech and a hum: the filter cannot cut at the boundary, but it stops within
    # half its window (1 s) of the last articulated frame.
    x = np.concatenate([silence(1), talk(5, 3), hum(8), silence(1)])
    (segment,) = detect_speech_samples(x, VadOptions(pad_s=0))
    assert segment.start == 1.0 and 6.0 <= segment.end <= 7.0


@needs_espeak
def test_whispered_speech_is_a_known_miss_of_the_default():
    # Whispering has no voice (no pitch), which is what the music filter asks for; webrtcvad alone and
    # silero find it. A known limit (README), pinned so that a change to it is seen.
    x = np.concatenate([silence(1), speak("Please send the report before Friday.", "en-us+whisper"), silence(1)])
    assert detect_speech_samples(x) == []
    assert len(detect_speech_samples(x, VadOptions(method="webrtc"))) == 1


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


@needs_espeak
def test_voice_features_do_not_depend_on_chunking():
    x = np.concatenate([talk(3, 4), hum(2), drums(2)])
    whole, pieces = score(x), score(x, chunk=4801)  # 4801: no chunk boundary on a frame boundary
    for name in ("speech", "energy_db", "periodicity", "pitch_lag", "shape_change_db"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(pieces, name), err_msg=name)
    assert len(whole.speech) == len(whole.shape_change_db) == 700 and whole.duration == 7.0


@needs_espeak
def test_feature_cache_gives_the_same_segments_and_scores_each_window_about_once(monkeypatch):
    # As the streaming detector uses it: a buffer growing by 1 s, its front dropped at times (on the
    # 10 ms grid, as the engine drops at region edges).
    x = np.concatenate([silence(0.5), talk(6, 5), hum(3), talk(4, 6)])
    cache, computed = vad_frames.FeatureCache(), []
    real = vad_frames._periodicity
    monkeypatch.setattr(vad_frames, "_periodicity", lambda w: computed.append(len(w)) or real(w))
    start, cached_rows, uncached_rows = 0, 0, 0
    for end in range(SAMPLE_RATE, len(x) + 1, SAMPLE_RATE):
        if end % (5 * SAMPLE_RATE) == 0:
            start = end - 3 * SAMPLE_RATE
        computed.clear()
        cached = detect_speech_samples(x[start:end], cache=cache)
        cached_rows += sum(computed)
        computed.clear()
        assert cached == detect_speech_samples(x[start:end])
        uncached_rows += sum(computed)
    frames = len(x) // 160
    assert cached_rows < 1.2 * frames < uncached_rows / 3  # measured 1220, 1350 and 4962


def windows(x: np.ndarray) -> np.ndarray:
    """(k, 512) frame windows of x, as FrameScorer takes them."""
    return np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 512)[::160]


def test_periodicity_finds_the_pitch_and_no_voice_in_tones_above_it():
    voice = sum(sine(1, 125 * k, amplitude=0.3 / k) for k in range(1, 12))  # 125 Hz: a 128-sample period
    periodicity, lag = vad_frames._periodicity(windows(voice))
    assert np.all(periodicity > 0.99) and np.all(lag == 128)
    assert np.all(vad_frames._periodicity(windows(noise(1, 0)))[0] < 0.5)
    # A 1 kHz tone repeats every 16 samples, so also every 128: without the check against shorter
    # periods it would be a perfect 125 Hz voice.
    for freq in (700.0, 1000.0, 1800.0):
        assert np.all(vad_frames._periodicity(windows(sine(1, freq)))[0] == 0.0)


def test_spectral_shape_ignores_loudness():
    # A harmonic tone fading in by 40 dB over a second: its shape does not change, its level does.
    tone = sum(sine(1, 150 * k, amplitude=0.3 / k) for k in range(1, 20)) * np.geomspace(0.01, 1, SAMPLE_RATE)
    shapes = vad_frames._spectral_shape(windows(tone))
    assert np.abs(shapes[5:] - shapes[:-5]).mean(axis=1).max() < 0.5
    # Dropping the harmonics above 450 Hz (as when a vowel turns into a nasal) moves it by several dB.
    dull = sum(sine(0.5, 150 * k, amplitude=0.3 / k) for k in range(1, 4))
    shapes = vad_frames._spectral_shape(windows(np.concatenate([tone[-8000:], dull])))
    assert np.abs(shapes[-1] - shapes[0]).mean() > 5.0


def test_music_filter_keeps_flagged_frames_near_voiced_articulated_ones():
    # Flagged for 5 s; voiced with a moving spectrum only in 2-3 s. With a 2 s window the frames that
    # see enough of it pass, and the pass is widened by 1 s, within the flagged region.
    flags = np.ones(500, dtype=bool)
    periodicity = np.zeros(500, np.float16)
    periodicity[200:300] = 0.9
    lag = np.full(500, 100, np.uint16)
    change = np.where(periodicity > 0, 5.0, 0.0).astype(np.float16)
    scores = FrameScores(flags, np.full(500, -20.0, np.float32), periodicity, lag, change, 5.0)
    kept = np.flatnonzero(music_filter(scores, 2.0, 0.3, 0.4, 30))
    assert kept[0] < 200 and kept[-1] >= 299 and len(kept) == kept[-1] - kept[0] + 1  # one run over the voice
    assert kept[0] >= 60 and kept[-1] < 440  # but not the flagged frames a window away
    # The same frames with the spectrum standing still (a hum) or no voice (noise) pass nothing.
    for still in (replace(scores, shape_change_db=np.zeros(500, np.float16)),
                  replace(scores, periodicity=np.zeros(500, np.float16))):  # fmt: skip
        assert not music_filter(still, 2.0, 0.3, 0.4, 30).any()


def test_edges_snap_to_the_sound():
    # Flagged 1.0-4.0 s; the sound (-10 dB) runs 1.25-3.8 s over a -60 dB floor, after a -45 dB breath:
    # edges move onto the sound.
    energy = np.full(600, -60.0)
    energy[100:125], energy[125:380] = -45.0, -10.0
    opts = VadOptions(method="webrtc", pad_s=0)
    got = segment_scores(scores_from(frames((0, 1), (1, 3), (0, 2)), energy), opts)
    assert [(s.start, s.end) for s in got] == [(1.25, 3.8)]
    # A sound starting up to 0.1 s before the detector's edge is reached, not further.
    energy = np.full(600, -60.0)
    energy[95:300] = -10.0
    got = segment_scores(scores_from(frames((0, 1), (1, 2), (0, 3)), energy), opts)
    assert [(s.start, s.end) for s in got] == [(0.95, 3.0)]
    energy[50:300] = -10.0
    got = segment_scores(scores_from(frames((0, 1), (1, 2), (0, 3)), energy), opts)
    assert [(s.start, s.end) for s in got] == [(0.9, 3.0)]
    # No frame clearly over the floor (a flat level): the detector's edges stay.
    got = segment_scores(scores_from(frames((0, 1), (1, 2), (0, 3))), opts)
    assert [(s.start, s.end) for s in got] == [(1.0, 3.0)]


def scores_from(flags: list[int] | np.ndarray, energy_db: np.ndarray | None = None) -> FrameScores:
    speech = np.asarray(flags, dtype=bool)
    energy = np.full(len(speech), -20.0, np.float32) if energy_db is None else energy_db.astype(np.float32)
    zeros = np.zeros(len(speech), np.float16)
    return FrameScores(speech, energy, zeros, np.zeros(len(speech), np.uint16), zeros, len(speech) / 100)


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


@needs_espeak
def test_two_hour_file_streams_in_bounded_memory(tmp_path):
    try:  # "5" resets the peak resident size (VmHWM) to the current one; Linux only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    path = tmp_path / "two_hours.flac"
    minute = np.zeros(60 * SAMPLE_RATE, np.int16)
    words = (talk(4) * 32767).astype(np.int16)
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
        ({"min_voiced_fraction": 1.5}, "min_voiced_fraction=1.5 must be in [0, 1]"),
        ({"min_articulation": -0.1}, "min_articulation=-0.1 must be in [0, 1]"),
        ({"edge_drop_db": 0}, "edge_drop_db=0 must be > 0"),
        ({"max_segment_s": 0.5}, "max_segment_s=0.5 must be at least 1 s"),
        ({"split_search_s": 30}, "split_search_s=30 must be in [0.1, max_segment_s=30.0)"),
    ],
)
def test_option_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        VadOptions(**kwargs)
    assert str(err.value) == message
