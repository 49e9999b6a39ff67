"""The whole speech model vs the transformers port (tiny config, fp32), and generation invariants.

The port runs with the speech LoRA merged by hand (W + alpha/r * B @ A) from the same official
checkpoint, which our loader converts; ours runs unmerged (exact official numerics) and merged.
"""

from __future__ import annotations

import json

import pytest
import torch

from speechkit.audio import LogMelFrontend, load_audio
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import jfk_path, speechlike
from speechkit.testing.compare import relative_error
from speechkit.testing.reference import port_causal_lm
from speechkit.text.prompts import PromptSpec, Task, encode_prompt

RTOL = 1e-5
MERGE_RTOL = 5e-5  # merged vs unmerged: another fp32 summation order, amplified through the layers


@pytest.fixture(scope="module")
def official(tiny_checkpoint):
    return json.loads((tiny_checkpoint / "config.json").read_text())


@pytest.fixture(scope="module")
def unmerged(tiny_checkpoint):
    return load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="unmerged")


@pytest.fixture(scope="module")
def merged(tiny_checkpoint):
    return load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="merged")


@pytest.fixture(scope="module")
def port(official, unmerged):
    scale = unmerged.config.speech_lora.scale
    return port_causal_lm(official, unmerged.model.state_dict(), lora_scale=scale, attn="sdpa")


@pytest.fixture(scope="module")
def audio():
    path = jfk_path()
    return load_audio(path).samples if path is not None else speechlike(6.0, seed=3)


def _inputs(loaded, audio, task=Task.ASR, language=None, context=None):
    feats = LogMelFrontend()([audio])
    n_tokens = -(-int(feats.lengths[0]) // 8)
    text = PromptSpec(task, language=language, context=context).text()
    ids = torch.tensor([encode_prompt(loaded.tokenizer, text, n_tokens)])
    return ids, feats


def _our_logits(loaded, ids, feats, keep=None):
    model = loaded.model
    with torch.no_grad():
        audio = model.audio(feats.values)
        hidden = model.decoder(model.embed_inputs(ids, audio), torch.arange(ids.shape[1])[None])
        return model.decoder.logits(hidden if keep is None else hidden[:, -keep:])


def _port_logits(port, ids, feats, keep=0):
    with torch.no_grad():
        return port(
            input_ids=ids,
            audio_input_features=feats.values,
            audio_embed_sizes=torch.tensor([(ids == 200011).sum()]),
            logits_to_keep=keep,
        ).logits


def test_logits_match_port(unmerged, merged, port, audio):
    ids, feats = _inputs(unmerged, audio)
    ref = _port_logits(port, ids, feats)
    assert relative_error(_our_logits(unmerged, ids, feats), ref) <= MERGE_RTOL
    assert relative_error(_our_logits(merged, ids, feats), ref) <= RTOL
    assert relative_error(_our_logits(unmerged, ids, feats), _our_logits(merged, ids, feats)) <= MERGE_RTOL


def test_logits_match_port_beyond_original_context(merged, port, audio):
    # a long text context pushes the prompt past original_max_position_embeddings (LongRoPE long factors)
    context = " ".join(f"word{i}" for i in range(1500))
    ids, feats = _inputs(merged, audio, context=context)
    assert ids.shape[1] > merged.config.decoder.rope.original_max_position_embeddings
    keep = 16
    assert relative_error(_our_logits(merged, ids, feats, keep), _port_logits(port, ids, feats, keep)) <= RTOL


@pytest.mark.parametrize(("task", "language"), [(Task.ASR, None), (Task.AST, "fr"), (Task.AST_COT, "de")])
def test_greedy_tokens_match_port(merged, port, audio, task, language):
    ids, feats = _inputs(merged, audio, task, language)
    n_new = 12
    with torch.no_grad():
        ref = port.generate(
            input_ids=ids,
            audio_input_features=feats.values,
            audio_embed_sizes=torch.tensor([(ids == 200011).sum()]),
            max_new_tokens=n_new,
            do_sample=False,
            eos_token_id=list(merged.tokenizer.stop_ids),
            pad_token_id=199999,
        )
        audio_out = merged.model.audio(feats.values)
    gen = generate(
        merged.model,
        [ids[0].tolist()],
        audio_out,
        max_new_tokens=[n_new],
        stop_ids=merged.tokenizer.stop_ids,
        pad_id=199999,
    )[0]
    expected = ref[0, ids.shape[1] :].tolist()
    if expected and expected[-1] in merged.tokenizer.stop_ids:
        expected = expected[:-1]
    assert list(gen.tokens) == expected


def test_text_only_request_is_the_base_model(unmerged, official):
    base_port = port_causal_lm(official, unmerged.model.state_dict(), lora_scale=None)
    ids = torch.tensor([unmerged.tokenizer.encode("<|user|>Summarize these notes.<|end|><|assistant|>")])
    decoder = unmerged.model.decoder
    decoder.set_lora_enabled(False)
    try:
        with torch.no_grad():
            ours = decoder.logits(decoder(decoder.embed(ids), torch.arange(ids.shape[1])[None]))
            ref = base_port(input_ids=ids).logits
    finally:
        decoder.set_lora_enabled(True)
    assert relative_error(ours, ref) <= RTOL


def test_padded_batch_gives_the_same_tokens(merged, audio):
    pipe = Pipeline(merged)
    clips = [load_audio(c, sample_rate=16000) for c in (audio, audio[: len(audio) // 3], speechlike(2.5, seed=7))]
    options = DecodeOptions(batch_size=3, max_new_tokens=10)
    together = pipe.transcribe(clips, options=options)
    alone = [pipe.transcribe([c], options=DecodeOptions(batch_size=1, max_new_tokens=10))[0] for c in clips]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.avg_logprob for r in together] == pytest.approx([r.avg_logprob for r in alone], abs=1e-4)


def test_generation_crossing_the_long_regime_recomputes_the_prefix(merged, port, audio):
    # prompt ends just below the threshold, generation crosses it: equals the port's full forward
    threshold = merged.config.decoder.rope.original_max_position_embeddings
    ids, feats = _inputs(merged, audio)
    filler = merged.tokenizer.encode(" la") * (threshold - ids.shape[1] - 1)
    ids = torch.cat([ids[:, :-2], torch.tensor([filler]), ids[:, -2:]], dim=1)
    with torch.no_grad():
        audio_out = merged.model.audio(feats.values)
    gen = generate(merged.model, [ids[0].tolist()], audio_out, max_new_tokens=[3], stop_ids=(), pad_id=199999)[0]
    full = torch.cat([ids, torch.tensor([gen.tokens])], dim=1)
    # the port picks the regime from each call's length: short up to the threshold, long beyond it
    ref = [int(_port_logits(port, full[:, : ids.shape[1] + k], feats, keep=1).argmax()) for k in range(3)]
    assert ids.shape[1] + 2 > threshold >= ids.shape[1]
    assert list(gen.tokens) == ref
