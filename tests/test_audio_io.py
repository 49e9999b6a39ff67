"""speechkit.audio.io: decoding, resampling, down-mixing, streaming, segments, and every error message."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from speechkit.audio import (
    FILL_ZERO_RATE,
    SAMPLE_RATE,
    audio_info,
    iter_audio_windows,
    load_audio,
    read_segment,
)
from speechkit.errors import AudioError
from speechkit.testing.audio import jfk_path, noise, sine, speechlike, write_audio


def peak_hz(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sample_rate)[spectrum.argmax()])


@pytest.fixture
def speech_44k(tmp_path):
    """3 s of stereo speech-like audio at 44.1 kHz in a float WAV (exact samples on disk)."""
    x = speechlike(3.0, seed=0, sample_rate=44100)
    return write_audio(tmp_path / "speech.wav", np.stack([x, 0.5 * x], axis=1), 44100, subtype="FLOAT")


# ---- rates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 11025])
def test_resampled_to_exactly_16k_and_pitch_kept(rate):
    x = sine(1.3, 1000.0, rate)
    wave = load_audio(x, sample_rate=rate)
    assert wave.sample_rate == SAMPLE_RATE
    assert abs(len(wave.samples) - len(x) * SAMPLE_RATE / rate) <= 1
    assert wave.duration == pytest.approx(1.3, abs=1e-4)
    # Integer decimation (the official path) would put a 44.1 kHz tone at 1378 Hz.
    assert peak_hz(wave.samples, SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0)


def test_16k_passes_through_unchanged():
    x = noise(0.5, seed=1)
    wave = load_audio(x, sample_rate=SAMPLE_RATE)
    np.testing.assert_array_equal(wave.samples, x)
    assert wave.samples.dtype == np.float32 and wave.samples.ndim == 1


def test_8k_kept_for_fill_zero_by_default_and_resampled_on_request():
    x = sine(1.0, 1000.0, FILL_ZERO_RATE)
    kept = load_audio(x, sample_rate=FILL_ZERO_RATE)
    assert kept.sample_rate == FILL_ZERO_RATE
    np.testing.assert_array_equal(kept.samples, x)
    up = load_audio(x, sample_rate=FILL_ZERO_RATE, keep_8k=False)
    assert up.sample_rate == SAMPLE_RATE and len(up.samples) == 16000
    assert peak_hz(up.samples, SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0)


# ---- channels, dtypes, sources --------------------------------------------------------------------


def test_stereo_file_is_averaged(tmp_path):
    left, right = sine(0.5, 440.0), noise(0.5, seed=2)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path).samples, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_stereo_array_layouts(layout):
    stereo = np.stack([sine(0.5, 440.0), noise(0.5, seed=3)], axis=1)
    array = stereo if layout == "channels_last" else stereo.T
    np.testing.assert_allclose(
        load_audio(array, sample_rate=SAMPLE_RATE).samples, stereo.mean(axis=1), atol=1e-7
    )


def test_integer_pcm_is_scaled():
    x16 = np.array([0, 16384, -32768] * 200, dtype=np.int16)
    np.testing.assert_array_equal(load_audio(x16, sample_rate=SAMPLE_RATE).samples[:3], [0.0, 0.5, -1.0])
    x32 = np.array([0, 2**30, -(2**31)] * 200, dtype=np.int32)
    np.testing.assert_array_equal(load_audio(x32, sample_rate=SAMPLE_RATE).samples[:3], [0.0, 0.5, -1.0])


def test_int16_range_floats_rescaled_with_warning():
    x = sine(0.5, 440.0, amplitude=0.5)
    with pytest.warns(UserWarning, match=r"<array> peaks at 16384: treated as unscaled int16"):
        wave = load_audio(x.astype(np.float64) * 32768, sample_rate=SAMPLE_RATE)
    np.testing.assert_allclose(wave.samples, x, atol=1e-6)


def test_slightly_hot_floats_left_alone():
    x = 1.5 * sine(0.5, 440.0, amplitude=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_audio(x, sample_rate=SAMPLE_RATE).samples, x)


def test_tensor_input_including_bfloat16():
    x = sine(0.5, 440.0)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(x), sample_rate=SAMPLE_RATE).samples, x)
    wave = load_audio(torch.from_numpy(x).to(torch.bfloat16), sample_rate=SAMPLE_RATE)
    assert wave.source == "<tensor>"
    np.testing.assert_allclose(wave.samples, x, atol=4e-3)


def test_bytes_input(tmp_path):
    x = sine(0.5, 440.0)
    data = write_audio(tmp_path / "b.flac", x).read_bytes()
    wave = load_audio(data)
    assert wave.source == f"<{len(data)} bytes>"
    np.testing.assert_allclose(wave.samples, x, atol=1 / 32768)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_formats(tmp_path, fmt):
    path = write_audio(tmp_path / f"tone.{fmt}", sine(1.0, 1000.0, 22050), 22050)
    wave = load_audio(path)
    assert wave.sample_rate == SAMPLE_RATE
    assert wave.duration == pytest.approx(1.0, abs=0.06)  # mp3 adds encoder padding
    assert peak_hz(wave.samples, SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0)


def test_jfk_loads():
    path = jfk_path()
    if path is None:
        pytest.skip("shared/data/audio/jfk.flac is not next to this checkout")
    wave = load_audio(path)
    assert wave.sample_rate == SAMPLE_RATE and wave.duration == pytest.approx(11.0, abs=0.05)
    assert 0.05 < np.abs(wave.samples).max() <= 1.0
    assert audio_info(path).sample_rate == 44100


# ---- streaming, segments, info ------------------------------------------------------------------


@pytest.mark.parametrize("window_s", [0.5, 1.3, 10.0])
def test_stream_concatenation_equals_load_audio(speech_44k, window_s):
    windows = list(iter_audio_windows(speech_44k, window_s))
    whole = load_audio(speech_44k).samples
    np.testing.assert_allclose(np.concatenate([w.samples for w in windows]), whole, atol=1e-4)
    assert [w.start_s for w in windows] == pytest.approx([i * window_s for i in range(len(windows))])
    assert windows[-1].end_s == pytest.approx(3.0)


def test_stream_is_exact_at_16k_with_overlap(tmp_path):
    path = write_audio(tmp_path / "s16.wav", speechlike(2.5, seed=4), subtype="FLOAT")
    whole = load_audio(path).samples
    windows = list(iter_audio_windows(path, 1.0, hop_s=0.4))
    assert [w.start_s for w in windows] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert [len(w.samples) for w in windows] == [16000] * 4 + [14400]
    for w in windows:
        start = round(w.start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(w.samples, whole[start : start + len(w.samples)])


def test_stream_crosses_read_blocks_at_8k(tmp_path):
    # 10 s at 8 kHz spans two 65536-frame reads; 8 kHz is resampled (windows are always 16 kHz).
    path = write_audio(tmp_path / "s8.wav", speechlike(10.0, seed=5, sample_rate=8000), 8000, subtype="FLOAT")
    streamed = np.concatenate([w.samples for w in iter_audio_windows(path, 3.0)])
    np.testing.assert_allclose(streamed, load_audio(path, keep_8k=False).samples, atol=1e-4)


@pytest.mark.parametrize(("start_s", "end_s"), [(0.0, 0.5), (0.73, 2.1), (2.5, 9.0)])
def test_read_segment_equals_slice_of_load_audio(speech_44k, start_s, end_s):
    whole = load_audio(speech_44k).samples
    segment = read_segment(speech_44k, start_s, end_s)
    expected = whole[round(start_s * SAMPLE_RATE) : round(min(end_s, 3.0) * SAMPLE_RATE)]
    assert segment.sample_rate == SAMPLE_RATE and len(segment.samples) == len(expected)
    np.testing.assert_allclose(segment.samples, expected, atol=1e-4)


def test_read_segment_native_rates(tmp_path):
    x = speechlike(2.0, seed=6, sample_rate=8000)
    path = write_audio(tmp_path / "n8.wav", x, 8000, subtype="FLOAT")
    kept = read_segment(path, 0.5, 1.5)
    assert kept.sample_rate == FILL_ZERO_RATE
    np.testing.assert_array_equal(kept.samples, x[4000:12000])
    up = read_segment(path, 0.5, 1.5, keep_8k=False)
    np.testing.assert_allclose(up.samples, load_audio(path, keep_8k=False).samples[8000:24000], atol=1e-4)


def test_audio_info(speech_44k):
    info = audio_info(speech_44k)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 132300)
    assert info.duration == pytest.approx(3.0)


# ---- every user-facing error ----------------------------------------------------------------------


def test_missing_file_everywhere(tmp_path):
    missing = tmp_path / "nope.wav"
    for call in (load_audio, audio_info, lambda p: read_segment(p, 0, 1), lambda p: iter_audio_windows(p, 1)):
        with pytest.raises(AudioError, match=rf"^no audio file at {missing}; check the path$"):
            call(missing)
    with pytest.raises(AudioError, match="no audio file at"):
        load_audio(tmp_path)  # a directory


def test_undecodable_file_and_bytes(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF this is not audio" * 20)
    message = rf"^could not decode {bad}: Format not recognised; convert it to wav/flac with ffmpeg$"
    for call in (load_audio, audio_info, lambda p: read_segment(p, 0, 1), lambda p: iter_audio_windows(p, 1)):
        with pytest.raises(AudioError, match=message):
            call(bad)
    with pytest.raises(
        AudioError, match=r"^could not decode <440 bytes>: .*convert it to wav/flac with ffmpeg$"
    ):
        load_audio(b"RIFF this is not audio" * 20)


def test_truncated_flac_fails_while_decoding(tmp_path):
    data = write_audio(tmp_path / "full.flac", noise(2.0, seed=7)).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=rf"^could not decode {cut}: .*lost sync; convert it to wav/flac"):
        load_audio(cut)
    with pytest.raises(AudioError, match="could not decode"):
        list(iter_audio_windows(cut, 1.0))


def test_empty_and_too_short(tmp_path):
    with pytest.raises(AudioError, match=r"^<array> contains no audio samples; pass non-empty audio$"):
        load_audio(np.zeros(0, np.float32), sample_rate=SAMPLE_RATE)
    empty = write_audio(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=rf"^{empty} contains no audio samples"):
        load_audio(empty)
    with pytest.raises(AudioError, match=rf"^{empty} contains no audio samples"):
        iter_audio_windows(empty, 1.0)
    short = (
        r"is too short: 399 samples at 16000 Hz, under one 25 ms window \(400 samples\); pass longer audio$"
    )
    with pytest.raises(AudioError, match=r"^<array> " + short):
        load_audio(np.zeros(399, np.float32), sample_rate=SAMPLE_RATE)
    assert len(load_audio(np.zeros(400, np.float32), sample_rate=SAMPLE_RATE).samples) == 400
    with pytest.raises(AudioError, match=r"199 samples at 8000 Hz, under one 25 ms window \(200 samples\)"):
        load_audio(np.zeros(199, np.float32), sample_rate=FILL_ZERO_RATE)
    path = write_audio(tmp_path / "ok.wav", np.zeros(16000, np.float32))
    with pytest.raises(AudioError, match=r"is too short: 160 samples at 16000 Hz"):
        read_segment(path, 0.5, 0.51)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(bad):
    x = sine(0.5, 440.0)
    x[100] = bad
    with pytest.raises(AudioError, match=r"^<array> contains NaN or Inf samples; repair or drop this audio$"):
        load_audio(x, sample_rate=SAMPLE_RATE)


def test_zero_channels_and_bad_shapes():
    with pytest.raises(
        AudioError, match=r"^<array> has zero channels; pass at least one channel of samples$"
    ):
        load_audio(np.zeros((1000, 0), np.float32), sample_rate=SAMPLE_RATE)
    for shape in [(20, 1000), (2, 3, 1000)]:
        with pytest.raises(
            AudioError, match=r"^<array> has shape .*; pass \(samples,\), .* at most 8 channels$"
        ):
            load_audio(np.zeros(shape, np.float32), sample_rate=SAMPLE_RATE)


def test_rate_errors(tmp_path):
    below = r"has sample rate 4000 Hz, below the 8000 Hz the model needs; use a recording at 8 kHz or more$"
    with pytest.raises(AudioError, match=r"^<array> " + below):
        load_audio(np.zeros(4000, np.float32), sample_rate=4000)
    path = write_audio(tmp_path / "low.wav", np.zeros(4000, np.float32), 4000)
    for call in (load_audio, lambda p: read_segment(p, 0, 1), lambda p: iter_audio_windows(p, 1)):
        with pytest.raises(AudioError, match=rf"^{path} " + below):
            call(path)
    with pytest.raises(
        AudioError, match=r"^<array> has no sample rate; call load_audio\(x, sample_rate=<Hz>\)$"
    ):
        load_audio(np.zeros(1000, np.float32))
    with pytest.raises(AudioError, match=r"^sample_rate=16000.0 for <array> must be a whole number of Hz$"):
        load_audio(np.zeros(1000, np.float32), sample_rate=16000.0)
    with pytest.raises(
        AudioError, match=rf"^sample_rate is for arrays only; {path} states its own rate, drop it$"
    ):
        load_audio(path, sample_rate=SAMPLE_RATE)


def test_unsupported_types_and_dtypes():
    with pytest.raises(
        AudioError, match=r"^cannot load audio from a list; pass a path, bytes, a numpy array"
    ):
        load_audio([0.0] * 1000, sample_rate=SAMPLE_RATE)
    with pytest.raises(
        AudioError, match=r"^<array> has dtype int64; pass float samples in \[-1, 1\] or int16/int32"
    ):
        load_audio(np.zeros(1000, np.int64), sample_rate=SAMPLE_RATE)


def test_peak_beyond_int16_range():
    with pytest.raises(
        AudioError, match=r"^<array> peaks at 1e\+05, far outside \[-1, 1\]; pass float samples"
    ):
        load_audio(np.full(1000, 1e5, np.float32), sample_rate=SAMPLE_RATE)


def test_partial_reads_reject_unscaled_floats(tmp_path):
    path = write_audio(tmp_path / "loud.wav", 1000 * sine(1.0, 440.0), subtype="FLOAT")
    message = rf"^{path} has float samples far outside \[-1, 1\] \(peak 500\); rescale the file"
    with pytest.raises(AudioError, match=message):
        read_segment(path, 0.0, 0.5)
    with pytest.raises(AudioError, match=message):
        list(iter_audio_windows(path, 0.5))


def test_window_and_segment_arguments(speech_44k):
    with pytest.raises(AudioError, match=r"window_s=0.01 for .* is under one 25 ms frame; pass more$"):
        iter_audio_windows(speech_44k, 0.01)
    for hop in (0.0, 2.0):
        with pytest.raises(AudioError, match=rf"hop_s={hop} for .* must be in \(0, window_s=1.0\]$"):
            iter_audio_windows(speech_44k, 1.0, hop_s=hop)
    for start, end in [(1.0, 1.0), (-0.5, 1.0)]:
        with pytest.raises(AudioError, match=r"is empty or negative; need 0 <= start_s < end_s$"):
            read_segment(speech_44k, start, end)
    with pytest.raises(
        AudioError, match=r"segment start 3.5 s is past the end of .* \(3.000 s\); pass a start"
    ):
        read_segment(speech_44k, 3.5, 4.0)


# ---- synthetic helpers ----------------------------------------------------------------------------


def test_synthetic_helpers_are_deterministic_and_shaped():
    np.testing.assert_array_equal(speechlike(1.0, seed=9), speechlike(1.0, seed=9))
    assert not np.array_equal(noise(1.0, seed=1), noise(1.0, seed=2))
    x = speechlike(2.0, seed=9, sample_rate=8000)
    assert x.shape == (16000,) and x.dtype == np.float32 and 0.45 < np.abs(x).max() < 0.55
    # On/off rhythm: a speech-like signal has near-silent gaps as well as loud bursts.
    rms = np.sqrt((x[: 16000 // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
    assert rms.min() < 0.01 < 0.1 < rms.max()
