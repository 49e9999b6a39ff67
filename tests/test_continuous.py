"""Continuous batching gives every request the tokens it gets alone on the plain path (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch
from decoding_helpers import prompted_clips

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.errors import ConfigError
from speechkit.inference import continuous
from speechkit.inference.continuous import generate_continuous
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike
from speechkit.text.prompts import PromptSpec, Task


@pytest.mark.parametrize("sync_every", [1, 8])
def test_each_request_gets_its_plain_tokens(loaded, monkeypatch, sync_every):
    monkeypatch.setattr(continuous, "SYNC_EVERY", sync_every)
    monkeypatch.setattr(continuous, "CAPACITY_BUCKET", 16)  # a ring of few slots: rows wrap around it
    seconds = [3.0, 1.2, 2.1, 0.7, 2.6, 1.5, 0.9] * 2
    prompts, audio = prompted_clips(loaded, seconds)
    caps = [20, 5, 12, 9, 3, 16, 7, 18, 11, 2, 14, 6, 20, 8]  # more steps than the ring's 80 slots
    plain_free = generate(loaded.model, prompts[:1], continuous.split_clips(audio)[0], max_new_tokens=caps[:1],
                          stop_ids=(), pad_id=0)  # fmt: skip
    stop_ids = (plain_free[0].tokens[4], *loaded.tokenizer.stop_ids)  # a frequent token stops rows early too
    alone = [generate(loaded.model, [p], continuous.split_clips(audio)[i], max_new_tokens=[c], stop_ids=stop_ids,
                      pad_id=0)[0] for i, (p, c) in enumerate(zip(prompts, caps, strict=True))]  # fmt: skip
    for width in (1, 3):
        together = generate_continuous(loaded.model, prompts, audio, max_new_tokens=caps, stop_ids=stop_ids,
                                       width=width)  # fmt: skip
        assert [g.tokens for g in together] == [g.tokens for g in alone]
        assert [g.stop for g in together] == [g.stop for g in alone]
        assert [g.avg_logprob for g in together] == pytest.approx([g.avg_logprob for g in alone], abs=1e-5)
    assert {g.stop for g in alone} >= {"length", "stop"}


def test_width_must_be_positive(loaded):
    with pytest.raises(ConfigError, match="continuous batching needs width >= 1, got 0"):
        generate_continuous(loaded.model, [[1, 2]], None, max_new_tokens=[2], stop_ids=(), width=0)


def test_request_leaving_the_short_regime_is_decoded_alone(loaded, monkeypatch):
    prompts, audio = prompted_clips(loaded, [1.0, 1.4, 0.8])
    threshold = loaded.config.decoder.rope.original_max_position_embeddings
    filler = loaded.tokenizer.encode(" la") * (threshold - len(prompts[1]) - 1)
    prompts[1] = prompts[1][:-2] + filler + prompts[1][-2:]  # crosses into the long regime while decoding
    alone_calls = []
    real = continuous.generate_fast
    monkeypatch.setattr(continuous, "generate_fast", lambda *a, **k: alone_calls.append(1) or real(*a, **k))
    caps, stop_ids = [6, 4, 6], loaded.tokenizer.stop_ids
    together = generate_continuous(loaded.model, prompts, audio, max_new_tokens=caps, stop_ids=stop_ids, width=2)
    alone = [generate(loaded.model, [p], continuous.split_clips(audio)[i], max_new_tokens=[c], stop_ids=stop_ids,
                      pad_id=0)[0] for i, (p, c) in enumerate(zip(prompts, caps, strict=True))]  # fmt: skip
    assert alone_calls == [1]
    assert [g.tokens for g in together] == [g.tokens for g in alone]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_layers", [False, True])
def test_graphed_ring_gives_the_plain_tokens(tiny_checkpoint, monkeypatch, compile_layers):
    """fp32 on the GPU: the ring step replayed from a CUDA graph (layers eager or compiled) and the prompts
    prefilled from graphs give every request its plain tokens."""
    monkeypatch.setattr(continuous, "CAPACITY_BUCKET", 16)
    loaded = load_speech_model(tiny_checkpoint, device=torch.device("cuda"), dtype=torch.float32, lora="merged")
    prompts, audio = prompted_clips(loaded, [3.0, 1.2, 2.1, 0.7, 2.6, 1.5, 0.9] * 2)
    caps, stop_ids = [20, 5, 12, 9, 3, 16, 7, 18, 11, 2, 14, 6, 20, 8], loaded.tokenizer.stop_ids
    alone = [generate(loaded.model, [p], continuous.split_clips(audio)[i], max_new_tokens=[c], stop_ids=stop_ids,
                      pad_id=0)[0] for i, (p, c) in enumerate(zip(prompts, caps, strict=True))]  # fmt: skip
    together = generate_continuous(loaded.model, prompts, audio, max_new_tokens=caps, stop_ids=stop_ids, width=3,
                                   compile_layers=compile_layers)  # fmt: skip
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert [g.avg_logprob for g in together] == pytest.approx([g.avg_logprob for g in alone], abs=1e-4)


def test_pipeline_groups_of_batches_give_the_fixed_batches_results(tiny_checkpoint):
    """``group_batches``: the pipeline decodes several batches as one continuous group, same results."""
    pipeline = Pipeline.load(str(tiny_checkpoint), device="cpu", dtype="float32")
    waves = [load_audio(speechlike(s, seed=i), sample_rate=SAMPLE_RATE)
             for i, s in enumerate([2.5, 0.8, 1.9, 1.1, 3.0, 0.6, 1.4])]  # fmt: skip
    fixed = pipeline.run(waves, PromptSpec(Task.ASR), DecodeOptions(batch_size=2))
    grouped = pipeline.run(waves, PromptSpec(Task.ASR), DecodeOptions(batch_size=2, group_batches=3))
    assert [r.tokens for r in grouped] == [r.tokens for r in fixed]
    assert [r.flags for r in grouped] == [r.flags for r in fixed]
    with pytest.raises(ConfigError, match="group_batches=0 must be >= 1"):
        DecodeOptions(group_batches=0)
