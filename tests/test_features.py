"""The log-mel front end against reference A.3-A.10 and the transformers extractor (SpeechLib bank)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Phi4MultimodalFeatureExtractor

from speechkit.audio.features import (
    LogMelFrontend,
    num_audio_tokens,
    num_frames,
    speechlib_mel_bank,
)
from speechkit.audio.io import load_audio
from speechkit.errors import AudioError
from speechkit.testing.audio import jfk_path


def test_mel_bank_spot_values():
    bank = speechlib_mel_bank()
    assert bank.shape == (80, 257)
    assert np.flatnonzero(bank[0]).tolist() == [1]
    assert bank[0, 1] == pytest.approx(0.57565, abs=1e-5)
    assert bank[1, 1:3] == pytest.approx([0.42435, 0.21091], abs=1e-5)
    assert np.flatnonzero(bank[2]).tolist() == [2] and bank[2, 2] == pytest.approx(0.78909, abs=1e-5)
    assert np.flatnonzero(bank[40]).tolist() == [54, 55, 56, 57, 58]
    assert np.flatnonzero(bank[79])[[0, -1]].tolist() == [231, 245]
    assert bank[79].argmax() == 238 and bank[79].max() == pytest.approx(0.99655, abs=1e-5)
    assert bank.sum() == pytest.approx(241.499, abs=1e-3)
    assert not bank[:, 0].any() and not bank[:, 246:].any()


def test_bank_differs_from_transformers_only_at_bin_246():
    theirs = Phi4MultimodalFeatureExtractor().mel_filters  # (257, 80)
    diff = np.argwhere(np.abs(theirs - speechlib_mel_bank().T) > 1e-6)
    assert diff.tolist() == [[246, 79]]


@pytest.mark.parametrize(("samples", "tokens"), [(400, 1), (16000, 13), (640000, 500), (640001, 500)])
def test_token_counts(samples, tokens):
    assert num_audio_tokens(samples) == tokens


def test_frames_counts():
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(560) == 2
    assert num_frames(8000, sample_rate=8000) == num_frames(16000)


def _reference(waves):
    fe = Phi4MultimodalFeatureExtractor()
    fe.mel_filters = speechlib_mel_bank().T.astype(np.float64)
    return [fe([w], sampling_rate=16000, return_tensors="pt")["audio_input_features"][0] for w in waves]


def _waves():
    rng = np.random.default_rng(0)
    waves = [
        rng.uniform(-0.5, 0.5, 16000 * 3).astype(np.float32),
        rng.normal(0, 0.1, 12345).astype(np.float32),
    ]
    path = jfk_path()
    if path is not None:
        waves.append(load_audio(path).samples)
    return waves


def test_matches_transformers_extractor_with_speechlib_bank():
    waves = _waves()
    feats = LogMelFrontend()(waves)
    for i, (wave, ref) in enumerate(zip(waves, _reference(waves), strict=True)):
        length = int(feats.lengths[i])
        assert length == ref.shape[0] == num_frames(len(wave))
        assert (feats.values[i, :length] - ref).abs().max() <= 1e-4
        assert not feats.values[i, length:].any()  # padded with 0.0 in the log-mel domain


def test_batch_equals_single():
    waves = _waves()
    frontend = LogMelFrontend()
    batch = frontend(waves)
    for i, wave in enumerate(waves):
        single = frontend([wave])
        assert torch.equal(batch.values[i, : single.values.shape[1]], single.values[0])


def test_silence_is_exactly_zero():
    feats = LogMelFrontend()([np.zeros(1600, dtype=np.float32)])
    assert not feats.values.any()


def test_fill_zero_8k_path():
    rng = np.random.default_rng(1)
    wave = rng.uniform(-0.5, 0.5, 8000 * 2).astype(np.float32)
    feats = LogMelFrontend()([wave], sample_rates=8000)
    assert feats.values.shape[1] == num_frames(len(wave), 8000) == num_frames(2 * len(wave))
    # nothing above 3968.75 Hz: the top 18 channels get no energy and sit at the log floor
    assert not feats.values[0, :, 62:].any()
    assert (feats.values[0, :, 1:60] > 0).all()


def test_mixed_rates_in_one_batch():
    rng = np.random.default_rng(2)
    w16 = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    w8 = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
    frontend = LogMelFrontend()
    batch = frontend([w16, w8], sample_rates=[16000, 8000])
    assert torch.equal(batch.values[1, :98], frontend([w8], 8000).values[0])
    assert torch.equal(batch.values[0], frontend([w16]).values[0])


def test_too_short_and_bad_rate_errors():
    frontend = LogMelFrontend()
    with pytest.raises(AudioError, match="shorter than one 25 ms window"):
        frontend([np.zeros(399, dtype=np.float32)])
    with pytest.raises(AudioError, match="16000 or 8000 Hz"):
        frontend([np.zeros(4000, dtype=np.float32)], sample_rates=22050)


def test_padded_batch_equals_items_one_by_one() -> None:
    # the training path featurises a padded batch at once; it must give each clip's own features
    from speechkit.testing.audio import speechlike

    frontend = LogMelFrontend("cpu")
    waves = [speechlike(seconds, seed=i) for i, seconds in enumerate([0.3, 1.7, 6.2, 0.0251])]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        padded[i, : len(wave)] = torch.from_numpy(wave)
    one_by_one, batched = frontend(waves), frontend.padded(padded, lengths)
    assert torch.equal(batched.lengths, one_by_one.lengths)
    torch.testing.assert_close(batched.values, one_by_one.values, rtol=0, atol=1e-5)
    staged = frontend.staged(waves)  # what a GPU front end does with a list of host waves
    assert torch.equal(staged.lengths, one_by_one.lengths)
    torch.testing.assert_close(staged.values, one_by_one.values, rtol=0, atol=1e-5)
    with pytest.raises(AudioError, match="shorter than one 25 ms window"):
        frontend.padded(padded, torch.tensor([399, 800, 800, 800]))


def test_short_path_matches_long_path() -> None:
    # inputs up to 512 frames take the numpy path; it must compute what the chunked torch path does
    from speechkit.testing.audio import speechlike

    frontend = LogMelFrontend()
    long = speechlike(6.0, seed=3)  # 598 frames: the torch path
    short = long[: 160 * 511 + 400]  # 512 frames: the numpy path
    torch.testing.assert_close(frontend.utterance(short), frontend.utterance(long)[:512], rtol=0, atol=1e-5)
