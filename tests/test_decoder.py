"""Decoder parity against the transformers port (``Phi4MultimodalForCausalLM``) on a tiny config.

The tiny config keeps the released structure (GQA 2:1, partial rotary 0.75, LongRoPE with factors
that are not all ones, tied embeddings, vocab 200064) and sets original_max_position_embeddings to
64 so that the long-factor regime is reached by short prompts. Every tensor is random (norm weights
included). Tolerance: max|ours - ref| / max|ref| <= 1e-5 in fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.model import attention
from speechkit.model.config import DecoderConfig, LoraConfig
from speechkit.model.decoder import Decoder, position_ids_from_mask
from speechkit.model.lora import merge_lora

transformers = pytest.importorskip("transformers")

RTOL = 1e-5
# Unmerged LoRA (x W^T + s (x A^T) B^T) against a merged weight: a different fp32 summation order,
# amplified through the layers; measured 8.8e-6 on this config.
MERGE_RTOL = 5e-5
THRESHOLD = 64  # original_max_position_embeddings of the tiny config

# Official config.json schema: read by DecoderConfig.from_official and by the port alike.
TINY_OFFICIAL = dict(
    vocab_size=200064,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    original_max_position_embeddings=THRESHOLD,
    partial_rotary_factor=0.75,  # head_dim 16 -> rotary_dim 12 -> 6 factors
    rope_theta=10000.0,
    rope_scaling={
        "type": "longrope",
        "short_factor": [1.0, 1.1, 1.25, 1.3, 1.6, 2.0],
        "long_factor": [1.0, 1.7, 3.0, 4.6, 6.6, 8.8],
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
TINY_LORA = LoraConfig(rank=8, alpha=24.0)  # scale 3.0: not 1, so a missing scale shows up


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def build_port(official: dict) -> torch.nn.Module:
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    # The port always builds its audio and vision towers; make them as small as possible.
    cfg = Phi4MultimodalConfig(
        **official,
        audio_config=dict(
            hidden_size=16, intermediate_size=16, num_blocks=1, num_attention_heads=2,
            ext_pw_out_channel=16, depthwise_separable_out_channel=16, nemo_conv_channels=8,
        ),
        vision_config=dict(
            hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14, crop_size=28,
        ),
        attn_implementation="eager",
    )
    return Phi4MultimodalForCausalLM(cfg).eval()


def randomise_decoder_(port: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in port.model.named_parameters():
            if name.startswith("embed_tokens_extend."):
                continue  # audio/vision towers: unused by the text decoder
            noise = torch.randn(p.shape, generator=gen)
            # norm weights around 1 (but not 1); embeddings and linears at a scale that keeps logits O(1)
            p.copy_(1.0 + 0.2 * noise if name.endswith("norm.weight") else 0.2 * noise)


def port_to_ours(port: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Test-only key map: the port's decoder keys minus the ``model.`` prefix; towers and lm_head dropped."""
    out = {}
    for key, value in port.state_dict().items():
        if key.startswith("model.") and not key.startswith("model.embed_tokens_extend."):
            out[key.removeprefix("model.")] = value.clone()
    return out


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, Decoder]:
    torch.manual_seed(0)
    port = build_port(TINY_OFFICIAL)
    randomise_decoder_(port, seed=1)
    ours = Decoder(DecoderConfig.from_official(TINY_OFFICIAL)).eval()
    ours.load_state_dict(port_to_ours(port), strict=True)
    return port, ours


def ids(length: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(0, 200064, (batch, length), generator=torch.Generator().manual_seed(seed))


def full_logits(ours: Decoder, input_ids: torch.Tensor) -> torch.Tensor:
    length = input_ids.shape[1]
    pos = torch.arange(length)[None].expand(input_ids.shape[0], -1)
    return ours.logits(ours(ours.embed(input_ids), pos))


def port_logits(port: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return port(input_ids=input_ids).logits


def test_parameter_names_and_shapes(pair):
    _, ours = pair
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes["embed_tokens.weight"] == (200064, 64)
    assert shapes["layers.1.self_attn.qkv_proj.weight"] == ((4 + 2 * 2) * 16, 64)
    assert shapes["layers.1.self_attn.o_proj.weight"] == (64, 64)
    assert shapes["layers.1.mlp.gate_up_proj.weight"] == (2 * 96, 64)
    assert shapes["layers.1.mlp.down_proj.weight"] == (64, 96)
    assert shapes["layers.0.input_layernorm.weight"] == (64,)
    assert shapes["layers.0.post_attention_layernorm.weight"] == (64,)
    assert shapes["norm.weight"] == (64,)
    assert len(shapes) == 1 + 2 * 6 + 1  # embed, 6 per layer, final norm: no lm_head when tied


@pytest.mark.parametrize(
    "length", [20, THRESHOLD, THRESHOLD + 1, 100], ids=["short", "at-threshold", "just-long", "long"]
)
def test_full_forward_matches_port(pair, length):
    port, ours = pair
    x = ids(length, seed=length)
    with torch.no_grad():
        assert rel_err(full_logits(ours, x), port_logits(port, x)) <= RTOL


def test_regime_switches_after_original_max_positions(pair):
    _, ours = pair
    assert ours.regime_for(THRESHOLD) == "short"
    assert ours.regime_for(THRESHOLD + 1) == "long"


def decode_incrementally(ours: Decoder, x: torch.Tensor, prefill: int, max_len: int) -> torch.Tensor:
    """Logits (1, L, vocab) of ``x`` fed as a prefill then one token per step through a static cache.

    Follows the official rule: when a step's KV length enters the long regime while the cache was
    filled under the short one, the whole prefix is recomputed with long factors.
    """
    embeds = ours.embed(x)
    cache = ours.allocate_cache(batch=1, max_len=max_len)
    regime = ours.regime_for(prefill)
    slots = torch.arange(prefill)
    h = ours(embeds[:, :prefill], slots[None], cache=cache, cache_position=slots)
    steps = [ours.logits(h)]
    for t in range(prefill, x.shape[1]):
        step_regime = ours.regime_for(t + 1)
        if step_regime != regime:
            regime = step_regime
            h = ours(embeds[:, : t + 1], torch.arange(t + 1)[None], cache=cache,
                     cache_position=torch.arange(t + 1), regime=regime)
            steps.append(ours.logits(h[:, -1:]))
            continue
        h = ours(embeds[:, t : t + 1], torch.tensor([[t]]), cache=cache, cache_position=torch.tensor([t]),
                 regime=regime)
        steps.append(ours.logits(h))
    return torch.cat(steps, dim=1)


def test_incremental_decoding_equals_full_forward(pair):
    port, ours = pair
    x = ids(30, seed=7)
    with torch.no_grad():
        inc = decode_incrementally(ours, x, prefill=12, max_len=40)
        assert rel_err(inc, full_logits(ours, x)) <= RTOL
        assert rel_err(inc, port_logits(port, x)) <= RTOL


def test_crossing_threshold_recomputes_with_long_factors(pair):
    port, ours = pair
    x = ids(THRESHOLD + 3, seed=11)
    with torch.no_grad():
        inc = decode_incrementally(ours, x, prefill=THRESHOLD - 2, max_len=THRESHOLD + 8)
        assert rel_err(inc[:, :THRESHOLD], port_logits(port, x[:, :THRESHOLD])) <= RTOL  # short regime
        # from the crossing step (a recompute) on, each step equals the port's full forward over its prefix
        for t in range(THRESHOLD, x.shape[1]):
            ref = port(input_ids=x[:, : t + 1], logits_to_keep=1).logits
            assert rel_err(inc[:, t], ref[:, -1]) <= RTOL


def test_crossing_without_recompute_would_be_wrong(pair):
    # Guard for the test above: keys cached under short factors give a measurably different answer.
    port, ours = pair
    x = ids(THRESHOLD + 1, seed=11)
    with torch.no_grad():
        embeds = ours.embed(x)
        cache = ours.allocate_cache(batch=1, max_len=THRESHOLD + 1)
        ours(embeds[:, :THRESHOLD], torch.arange(THRESHOLD)[None], cache=cache)
        h = ours(embeds[:, THRESHOLD:], torch.tensor([[THRESHOLD]]), cache=cache,
                 cache_position=torch.tensor([THRESHOLD]))
        assert rel_err(ours.logits(h)[:, -1], port_logits(port, x)[:, -1]) > 1e-3


def left_pad(seqs: list[torch.Tensor], pad_id: int = 199999) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.shape[1] for s in seqs)
    batch = torch.full((len(seqs), width), pad_id)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, width - s.shape[1]:] = s[0]
        mask[i, width - s.shape[1]:] = 1
    return batch, mask


def test_left_padded_batch_equals_one_by_one(pair):
    _, ours = pair
    seqs = [ids(9, seed=21), ids(16, seed=22), ids(13, seed=23)]
    batch, mask = left_pad(seqs)
    width = batch.shape[1]
    extra = ids(3, seed=24, batch=3)  # three decoding steps per row
    with torch.no_grad():
        cache = ours.allocate_cache(batch=3, max_len=width + 3)
        h = ours(ours.embed(batch), position_ids_from_mask(mask), cache=cache, attention_mask=mask)
        prefill = ours.logits(h)
        steps = []
        for t in range(3):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
            pos = mask.sum(-1, keepdim=True) - 1
            h = ours(ours.embed(extra[:, t : t + 1]), pos, cache=cache,
                     cache_position=torch.tensor([width + t]), attention_mask=mask)
            steps.append(ours.logits(h))
        for i, s in enumerate(seqs):
            alone = full_logits(ours, torch.cat([s, extra[i : i + 1]], dim=1))
            n = s.shape[1]
            assert rel_err(prefill[i, width - n:], alone[0, :n]) <= RTOL
            assert rel_err(torch.cat(steps, dim=1)[i], alone[0, n:]) <= RTOL


@pytest.mark.parametrize("sdpa_from_batch", [1, 64], ids=["sdpa", "written-out"])
def test_grouped_query_steps_equal_plain_steps(pair, monkeypatch, sdpa_from_batch):
    # The CUDA-graph step folds each KV head's query heads into one group (no GQA repeat under the mask):
    # a different kernel, not different math, on either side of the batch size where it switches to SDPA.
    # Left-padded rows, full-width mask, as that step runs.
    monkeypatch.setattr(attention, "STEP_SDPA_FROM_BATCH", sdpa_from_batch)
    _, ours = pair
    seqs = [ids(9, seed=41), ids(16, seed=42), ids(13, seed=43)]
    batch, mask = left_pad(seqs)
    width = batch.shape[1]
    mask = torch.cat([mask, torch.ones(3, 4, dtype=torch.long)], dim=1)
    positions = position_ids_from_mask(mask)
    extra = ids(4, seed=44, batch=3)
    steps = {}
    with torch.no_grad():
        for grouped in (False, True):
            cache = ours.allocate_cache(batch=3, max_len=width + 4)
            ours(ours.embed(batch), positions[:, :width], cache=cache, attention_mask=mask[:, :width], prefill=True)
            steps[grouped] = torch.cat([
                ours.logits(ours(ours.embed(extra[:, t : t + 1]), positions[:, width + t : width + t + 1], cache=cache,
                                 cache_position=torch.tensor([width + t]), attention_mask=mask, group_queries=grouped))
                for t in range(4)
            ], dim=1)  # fmt: skip
    assert rel_err(steps[True], steps[False]) <= RTOL  # measured 1.5e-6: another fp32 summation order


def test_grouped_queries_refuse_anything_but_single_token_cached_steps(pair):
    _, ours = pair
    x = ours.embed(ids(3, seed=45))
    cache = ours.allocate_cache(batch=1, max_len=8)
    with torch.no_grad(), pytest.raises(ConfigError, match="group_queries is for single-token decode steps"):
        ours(x, torch.arange(3)[None], cache=cache, group_queries=True)
    with torch.no_grad(), pytest.raises(ConfigError, match="got 1 tokens, cache=none"):
        ours(x[:, :1], torch.zeros(1, 1, dtype=torch.long), group_queries=True)


def test_padded_batch_uses_total_kv_length_for_regime(pair):
    # Official rule (reference E, H.8): the padded KV length picks the regime, so a short item
    # batched with a long one runs with long factors. Pinned by comparing with a forced regime.
    _, ours = pair
    short, long = ids(20, seed=31), ids(THRESHOLD + 10, seed=32)
    batch, mask = left_pad([short, long])
    with torch.no_grad():
        out = ours.logits(ours(ours.embed(batch), position_ids_from_mask(mask), attention_mask=mask))
        forced = ours.logits(ours(ours.embed(short), torch.arange(20)[None], regime="long"))
        natural = full_logits(ours, short)
    assert rel_err(out[0, -20:], forced[0]) <= RTOL
    assert rel_err(out[0, -20:], natural[0]) > 1e-3


def test_bf16_stays_bf16_and_drifts_no_more_than_the_port(pair):
    # No dtype is fixed inside forward: the cast model runs in bf16 end to end. Random tiny weights
    # make bf16 drift large (~10 % of max|logit| for both), so the check is relative to the port's.
    port, ours = pair
    port_bf16, ours_bf16 = copy.deepcopy(port).bfloat16(), copy.deepcopy(ours).bfloat16()
    x = ids(20, seed=71)
    with torch.no_grad():
        ref = port_logits(port, x)
        out = full_logits(ours_bf16, x)
        port_drift = rel_err(port_logits(port_bf16, x).float(), ref)
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) <= 1.5 * port_drift


def test_meta_device_build_then_load(pair):
    _, ours = pair
    with torch.device("meta"):
        meta = Decoder(ours.config)
    meta.load_state_dict(ours.state_dict(), assign=True)
    x = ids(THRESHOLD + 3, seed=41)
    with torch.no_grad():
        assert torch.equal(full_logits(meta.eval(), x), full_logits(ours, x))


def lora_pair(pair) -> tuple[Decoder, dict[str, torch.Tensor]]:
    """Our LoRA decoder on the port's base weights with a random adapter, and its merged weights."""
    port, ours = pair
    with torch.device("meta"):  # skips the random init that the load overwrites anyway
        lora_dec = Decoder(ours.config, TINY_LORA).eval()
    gen = torch.Generator().manual_seed(51)
    state = port_to_ours(port)
    merged = dict(state)
    for key in [k for k in lora_dec.state_dict() if k.endswith(".lora_a")]:
        prefix = key.removesuffix(".lora_a")
        w = state[prefix + ".weight"]
        state[prefix + ".lora_a"] = 0.1 * torch.randn(TINY_LORA.rank, w.shape[1], generator=gen)
        state[prefix + ".lora_b"] = 0.1 * torch.randn(w.shape[0], TINY_LORA.rank, generator=gen)
        merged[prefix + ".weight"] = merge_lora(w, state[prefix + ".lora_a"], state[prefix + ".lora_b"],
                                                TINY_LORA.scale)
    lora_dec.load_state_dict(state, strict=True, assign=True)
    return lora_dec, merged


def test_lora_decoder_matches_port_with_merged_weights(pair):
    port, ours = pair
    lora_dec, merged = lora_pair(pair)
    merged_port = copy.deepcopy(port)
    missing, unexpected = merged_port.model.load_state_dict(merged, strict=False)
    assert not unexpected and all(k.startswith("embed_tokens_extend.") for k in missing)
    x = ids(24, seed=52)
    with torch.no_grad():
        ref = port_logits(merged_port, x)
        assert rel_err(full_logits(lora_dec, x), ref) <= MERGE_RTOL
        lora_dec.set_lora_enabled(False)  # text-only request: bare Phi-4-mini
        assert rel_err(full_logits(lora_dec, x), port_logits(port, x)) <= RTOL
        lora_dec.set_lora_enabled(True)
        lora_dec.merge_lora_()
        assert lora_dec.lora_state == "merged"
        assert rel_err(full_logits(lora_dec, x), ref) <= RTOL  # same merged weights: same op order
        with pytest.raises(ConfigError, match="cannot be switched off"):
            lora_dec.set_lora_enabled(False)


def test_lora_switch_errors(pair):
    _, ours = pair
    assert ours.lora_state == "none"
    with pytest.raises(ConfigError, match="built without a LoRA adapter"):
        ours.set_lora_enabled(True)
    ours.set_lora_enabled(False)  # already bare: a no-op


def test_cache_position_without_cache_is_rejected(pair):
    _, ours = pair
    x = ids(4, seed=61)
    with pytest.raises(ConfigError, match="cache_position or prefill was given without a KV cache"):
        ours(ours.embed(x), torch.arange(4)[None], cache_position=torch.arange(4))
    with pytest.raises(ConfigError, match="attention_mask covers 9 slots, more than the 4 available"):
        ours(ours.embed(x), torch.arange(4)[None], attention_mask=torch.ones(1, 9))


@pytest.mark.parametrize("batch", [1, attention.STEP_SDPA_FROM_BATCH])
def test_step_attention_forms_equal_gqa_sdpa(batch):
    # each batch size's form (matrix products, SDPA on query groups) is the same math as SDPA's own
    # grouped-query attention, under a mask that hides the tail of every row's cache
    gen = torch.Generator().manual_seed(batch)
    q = torch.randn(batch, 6, 1, 16, generator=gen)
    k, v = torch.randn(2, batch, 2, 30, 16, generator=gen)
    bias = torch.zeros(batch, 1, 1, 30)
    for row in range(batch):
        bias[row, ..., 20 + row % 10 :] = float("-inf")
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    assert rel_err(attention.grouped_step_attention(q, k, v, bias), ref) <= 1e-6
