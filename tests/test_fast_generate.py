"""The fast decode path (static buffers; a CUDA graph on GPU) gives the plain path's tokens (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

from speechkit.audio import LogMelFrontend
from speechkit.inference import fast_generate as fast
from speechkit.inference.generate import generate
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike
from speechkit.text.prompts import PromptSpec, Task, encode_prompt


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="merged")


def _batch(loaded, seconds, task=Task.ASR):
    feats = LogMelFrontend()([speechlike(s, seed=i) for i, s in enumerate(seconds)])
    with torch.no_grad():
        audio = loaded.model.audio(feats.values, feats.lengths)
    text = PromptSpec(task, language="fr" if task is not Task.ASR else None).text()
    return [encode_prompt(loaded.tokenizer, text, int(n)) for n in audio.lengths], audio


@pytest.mark.parametrize("sync_every", [1, 8])
def test_fast_equals_plain(loaded, monkeypatch, sync_every):
    monkeypatch.setattr(fast, "SYNC_EVERY", sync_every)
    prompts, audio = _batch(loaded, [3.0, 1.2, 2.1])
    caps = [24, 7, 15]
    # a frequent token as an extra stop id, so rows stop at different steps
    plain_free = generate(loaded.model, prompts, audio, max_new_tokens=caps, stop_ids=(), pad_id=199999)
    stop = (plain_free[0].tokens[5],)
    for stop_ids in ((), stop, loaded.tokenizer.stop_ids):
        kwargs = dict(max_new_tokens=caps, stop_ids=stop_ids, pad_id=199999)
        plain = generate(loaded.model, prompts, audio, **kwargs)
        quick = fast.generate_fast(loaded.model, prompts, audio, **kwargs)
        assert [g.tokens for g in quick] == [g.tokens for g in plain]
        assert [g.stop for g in quick] == [g.stop for g in plain]
        assert [g.avg_logprob for g in quick] == pytest.approx([g.avg_logprob for g in plain], abs=1e-5)


def test_crossing_the_regime_takes_the_plain_path(loaded, monkeypatch):
    prompts, audio = _batch(loaded, [1.0])
    threshold = loaded.config.decoder.rope.original_max_position_embeddings
    filler = loaded.tokenizer.encode(" la") * (threshold - len(prompts[0]) - 1)
    prompts = [prompts[0][:-2] + filler + prompts[0][-2:]]
    called = []
    monkeypatch.setattr(fast, "generate", lambda *a, **k: called.append(1) or generate(*a, **k))
    out = fast.generate_fast(loaded.model, prompts, audio, max_new_tokens=[4], stop_ids=(), pad_id=199999)
    assert called and len(out[0].tokens) == 4
