"""The fast decode path (static buffers; a CUDA graph on GPU) gives the plain path's tokens (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch
from decoding_helpers import prompted_clips

from speechkit.errors import ConfigError
from speechkit.inference import fast_generate as fast
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import Pipeline
from speechkit.model.attention import STEP_SDPA_FROM_BATCH
from speechkit.model.loader import load_speech_model
from speechkit.text.prompts import Task


@pytest.mark.parametrize("graph_max_tokens", [0, fast.PREFILL_GRAPH_MAX_TOKENS], ids=["exact-prefill", "padded"])
def test_fast_equals_plain(loaded, monkeypatch, graph_max_tokens):
    monkeypatch.setattr(fast, "PREFILL_GRAPH_MAX_TOKENS", graph_max_tokens)
    prompts, audio = prompted_clips(loaded, [3.0, 1.2, 2.1])
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
    prompts, audio = prompted_clips(loaded, [1.0])
    threshold = loaded.config.decoder.rope.original_max_position_embeddings
    filler = loaded.tokenizer.encode(" la") * (threshold - len(prompts[0]) - 1)
    prompts = [prompts[0][:-2] + filler + prompts[0][-2:]]
    called = []
    monkeypatch.setattr(fast, "generate", lambda *a, **k: called.append(1) or generate(*a, **k))
    out = fast.generate_fast(loaded.model, prompts, audio, max_new_tokens=[4], stop_ids=(), pad_id=199999)
    assert called and len(out[0].tokens) == 4


def _check(loaded, prompts, audio, caps, stop_ids, steps):
    kwargs = dict(max_new_tokens=caps, stop_ids=stop_ids, pad_id=199999)
    plain = generate(loaded.model, prompts, audio, **kwargs)
    quick = fast.generate_fast(loaded.model, prompts, audio, steps=steps, **kwargs)
    assert [g.tokens for g in quick] == [g.tokens for g in plain]
    assert [g.stop for g in quick] == [g.stop for g in plain]
    assert [g.avg_logprob for g in quick] == pytest.approx([g.avg_logprob for g in plain], abs=1e-5)


def test_kept_steps_give_the_plain_tokens_request_after_request(loaded):
    """A kept step is fully reset between requests: cache slots, positions, masks, stop flags."""
    steps = fast.StepCache(max_entries=2)
    first, audio = prompted_clips(loaded, [3.0, 1.2, 2.1])
    _check(loaded, first, audio, [24, 7, 15], (), steps)
    (kept,) = steps._steps.values()
    # a non-finite value left in the cache must not reach the next request (masked slots weigh 0 * NaN)
    with torch.inference_mode():
        for buf in (*kept.cache.keys, *kept.cache.values):
            buf.fill_(float("nan"))
    # same bucket, other prompts and padding (a shorter longest prompt), an early stop id: the same step
    second, audio = prompted_clips(loaded, [1.0, 2.5, 0.6], Task.AST)
    free = generate(loaded.model, second, audio, max_new_tokens=[20] * 3, stop_ids=(), pad_id=199999)
    _check(loaded, second, audio, [20, 12, 20], (free[1].tokens[3],), steps)
    assert list(steps._steps.values()) == [kept]
    # another batch size is another step; the first is still kept and still right
    single, audio = prompted_clips(loaded, [1.7])
    _check(loaded, single, audio, [18], loaded.tokenizer.stop_ids, steps)
    assert len(steps) == 2
    third, audio = prompted_clips(loaded, [0.8, 0.9, 2.8])
    _check(loaded, third, audio, [16, 16, 16], loaded.tokenizer.stop_ids, steps)
    assert kept in steps._steps.values() and len(steps) == 2


def test_step_cache_is_bounded_and_clears(loaded):
    steps = fast.StepCache(max_entries=1, bucket=64)
    for seconds in ([1.0], [1.0, 0.5], [1.0]):
        prompts, audio = prompted_clips(loaded, seconds)
        _check(loaded, prompts, audio, [6] * len(seconds), (), steps)
        assert len(steps) == 1
    (kept,) = steps._steps.values()
    assert kept.cache.batch == 1 and kept.cache.max_len % 64 == 0
    steps.clear()
    assert len(steps) == 0


def test_step_cache_rejects_empty_bounds():
    with pytest.raises(ConfigError, match="max_entries >= 1 and bucket >= 1, got max_entries=0, bucket=256"):
        fast.StepCache(max_entries=0)


def test_compiled_layers_give_the_plain_tokens(loaded):
    """One compiled ``DecoderLayer.forward`` for every layer (Inductor on CPU here), across two batch sizes."""
    for seconds in ([3.0, 1.2, 2.1], [1.7]):
        prompts, audio = prompted_clips(loaded, seconds)
        kwargs = dict(max_new_tokens=[12] * len(seconds), stop_ids=loaded.tokenizer.stop_ids, pad_id=199999)
        plain = generate(loaded.model, prompts, audio, **kwargs)
        quick = fast.generate_fast(loaded.model, prompts, audio, compile_layers=True, **kwargs)
        assert [g.tokens for g in quick] == [g.tokens for g in plain]
        assert [g.avg_logprob for g in quick] == pytest.approx([g.avg_logprob for g in plain], abs=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_layers", [False, True])
def test_graphed_prefills_and_steps_give_the_plain_tokens(tiny_checkpoint, compile_layers):
    """fp32 on the GPU: prompts prefilled from CUDA graphs (padded to their length bucket) and decode steps
    (each layer eager or compiled) replayed, both kept across requests, give the plain path's tokens."""
    loaded = load_speech_model(tiny_checkpoint, device=torch.device("cuda"), dtype=torch.float32, lora="merged")
    steps = fast.StepCache(max_entries=2)
    for seconds, task in (([3.0, 1.2, 2.1], Task.ASR), ([1.0, 2.5, 0.6], Task.AST), ([1.7], Task.ASR),
                          ([1.9], Task.ASR), ([2.2, 2.3, 0.9], Task.ASR)):  # fmt: skip
        prompts, audio = prompted_clips(loaded, seconds, task)
        kwargs = dict(max_new_tokens=[16] * len(seconds), stop_ids=loaded.tokenizer.stop_ids, pad_id=199999)
        plain = generate(loaded.model, prompts, audio, **kwargs)
        quick = fast.generate_fast(loaded.model, prompts, audio, steps=steps, compile_layers=compile_layers,
                                   **kwargs)  # fmt: skip
        assert [g.tokens for g in quick] == [g.tokens for g in plain]
        assert [g.avg_logprob for g in quick] == pytest.approx([g.avg_logprob for g in plain], abs=1e-4)
    assert all(step.graph is not None and step._prefills for step in steps._steps.values())


def test_warm_up_does_nothing_on_cpu(tiny_checkpoint):
    pipeline = Pipeline.load(str(tiny_checkpoint), device="cpu", dtype="float32")
    pipeline.warm_up()
    assert len(pipeline.decode_steps) == 0 and pipeline.audio_graphs is None


def test_warm_up_decodes_batches_of_one_and_two(tiny_checkpoint, monkeypatch):
    """The warm-up's requests themselves, run on the CPU: the device it checks says CUDA, the model stays."""
    pipeline = Pipeline.load(str(tiny_checkpoint), device="cpu", dtype="float32")
    pipeline.device = torch.device("cuda")
    sizes, real_run = [], pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda waves, *a, **k: sizes.append(len(waves)) or real_run(waves, *a, **k))
    pipeline.warm_up()
    assert sizes == [1, 2] and len(pipeline.decode_steps) == 2
    sizes.clear()
    pipeline.warm_up(max_batch=STEP_SDPA_FROM_BATCH)  # a server taking batches where the step attention switches
    assert sizes == [1, 2, STEP_SDPA_FROM_BATCH] and len(pipeline.decode_steps) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_up_builds_steps_for_two_batch_sizes(tiny_checkpoint):
    pipeline = Pipeline.load(str(tiny_checkpoint), device="cuda", dtype="float32")
    pipeline.warm_up()
    assert len(pipeline.decode_steps) == 2 and len(pipeline.audio_graphs) >= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 8, STEP_SDPA_FROM_BATCH, 64])
def test_step_attention_on_gpu_matches_fp32(batch):
    # the decode step's attention at the released head shapes (below STEP_SDPA_FROM_BATCH the Triton kernel with its
    # rotary and cache writes, from there cuDNN on Hopper) against fp32 SDPA, rows hiding different cache tails;
    # bf16 inputs, so the bound is bf16 rounding of the output
    from speechkit.model.attention import grouped_step_attention
    from speechkit.model.kv_cache import write_slots
    from speechkit.model.rope import RopeTables, apply_rotary

    gen = torch.Generator(device="cuda").manual_seed(batch)
    heads, kv_heads, slots, slot = 24, 8, 486, 400
    qkv = torch.randn(batch, 1, 40 * 128, generator=gen, device="cuda", dtype=torch.bfloat16)
    angles = torch.rand(batch, 1, 48, generator=gen, device="cuda") * 6.0
    rope = RopeTables(*(torch.cat([f(angles)] * 2, -1).bfloat16() for f in (torch.cos, torch.sin)))
    k_cache, v_cache = torch.randn(2, batch, kv_heads, slots, 128, generator=gen, device="cuda", dtype=torch.bfloat16)
    bias = torch.zeros(batch, 1, 1, slots, device="cuda", dtype=torch.bfloat16)
    for row in range(batch):
        bias[row, ..., slot - row % 100 + 1 :] = float("-inf")
        bias[row, ..., slot] = 0.0  # every row sees the new slot
    split = qkv.float().view(batch, 1, 40, 128)
    qk = apply_rotary(split[:, :, :32].transpose(1, 2), RopeTables(rope.cos.float(), rope.sin.float()))
    k_ref, v_ref = write_slots((k_cache.float(), v_cache.float()), torch.tensor([slot], device="cuda"),
                               qk[:, 24:], split[:, :, 32:].transpose(1, 2))  # fmt: skip
    ref = torch.nn.functional.scaled_dot_product_attention(qk[:, :24], k_ref, v_ref, attn_mask=bias.float(),
                                                           enable_gqa=True).reshape(batch, -1)  # fmt: skip
    if batch < STEP_SDPA_FROM_BATCH:
        position = torch.tensor([slot], device="cuda")
        out = torch.ops.speechkit.decode_step_attention(qkv[:, 0], rope.cos[:, 0], rope.sin[:, 0], k_cache, v_cache,
                                                        position, bias.reshape(batch, -1), heads, 2)  # fmt: skip
        torch.testing.assert_close(k_cache[:, :, slot].float(), k_ref[:, :, slot], rtol=1e-2, atol=1e-2)
        assert torch.equal(v_cache.float(), v_ref)
    else:
        out = grouped_step_attention(qk[:, :24].bfloat16(), k_ref.bfloat16(), v_ref.bfloat16(), bias).reshape(batch, -1)
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() <= 1e-2
