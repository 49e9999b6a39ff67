"""LongRoPE tables and partial rotary application against the transformers port, plus invariants."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
import torch

from speechkit.model.config import DecoderConfig, RopeConfig
from speechkit.model.rope import LongRope, RopeTables, apply_rotary

transformers = pytest.importorskip("transformers")

THRESHOLD = 64
SHORT = [1.0, 1.1, 1.25, 1.3, 1.6, 2.0]
LONG = [1.0, 1.7, 3.0, 4.6, 6.6, 8.8]
TINY = RopeConfig(
    theta=10000.0, rotary_dim=12, max_position_embeddings=4096, original_max_position_embeddings=THRESHOLD,
    short_factor=tuple(SHORT), long_factor=tuple(LONG),
)


def port_rotary():
    from transformers import Phi4MultimodalConfig
    from transformers.models.phi4_multimodal.modeling_phi4_multimodal import Phi4MultimodalRotaryEmbedding

    cfg = Phi4MultimodalConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        original_max_position_embeddings=THRESHOLD, partial_rotary_factor=0.75, rope_theta=10000.0,
        rope_scaling={"type": "longrope", "short_factor": SHORT, "long_factor": LONG},
    )
    return Phi4MultimodalRotaryEmbedding(cfg)


@pytest.mark.parametrize(("length", "regime"), [(THRESHOLD, "short"), (THRESHOLD + 1, "long"), (300, "long")])
def test_tables_match_port(length, regime):
    # The port picks the regime from max(position)+1, ours from the KV length: equal here (no padding).
    ref_cos, ref_sin = port_rotary()(torch.zeros(1, dtype=torch.float32), torch.arange(length)[None])
    rope = LongRope(TINY)
    assert rope.regime_for(length) == regime
    ours = rope.tables(torch.arange(length)[None], regime, torch.float32)
    # same op order as the port: bit-identical, not merely close
    assert torch.equal(ours.cos, ref_cos)
    assert torch.equal(ours.sin, ref_sin)


def test_tables_are_scaled_by_attention_scale():
    rope = LongRope(TINY)
    t = rope.tables(torch.tensor([[0]]), "short", torch.float32)
    # position 0: cos = scale, sin = 0
    assert torch.allclose(t.cos, torch.full_like(t.cos, math.sqrt(2.0)))
    assert torch.equal(t.sin, torch.zeros_like(t.sin))


def test_released_config_scale_and_regimes():
    official = json.loads(resources.files("speechkit.testing").joinpath("released_config.json").read_text())
    rope = DecoderConfig.from_official(official).rope
    assert rope.rotary_dim == 96
    assert rope.attention_scale == pytest.approx(1.1902380714, abs=1e-10)
    assert LongRope(rope).regime_for(4096) == "short"
    assert LongRope(rope).regime_for(4097) == "long"


def test_no_long_factors_means_always_short():
    cfg = RopeConfig(rotary_dim=12, max_position_embeddings=4096, original_max_position_embeddings=64)
    rope = LongRope(cfg)
    assert rope.regime_for(10**6) == "short"
    assert rope.config.attention_scale == 1.0


def test_inv_freq_uses_the_regime_factors():
    rope = LongRope(TINY)
    plain = 1.0 / (10000.0 ** (torch.arange(0, 12, 2).double() / 12))
    torch.testing.assert_close(rope.inv_freq("short").double(), plain / torch.tensor(SHORT).double())
    torch.testing.assert_close(rope.inv_freq("long").double(), plain / torch.tensor(LONG).double())


def test_apply_rotary_matches_port_and_passes_tail_through():
    from transformers.models.phi4_multimodal.modeling_phi4_multimodal import apply_rotary_pos_emb

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 10, 16, generator=gen)
    k = torch.randn(2, 2, 10, 16, generator=gen)
    positions = torch.stack([torch.arange(10), torch.arange(5, 15)])
    tables = LongRope(TINY).tables(positions, "long", torch.float32)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, tables.cos, tables.sin)
    assert torch.equal(apply_rotary(q, tables), ref_q)
    assert torch.equal(apply_rotary(k, tables), ref_k)
    assert torch.equal(apply_rotary(q, tables)[..., 12:], q[..., 12:])  # dims 12..15 unrotated


def test_rotation_is_relative():
    # <R(m) q, R(n) k> depends only on m - n: the property the cache relies on.
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 16, generator=gen), torch.randn(1, 1, 1, 16, generator=gen)
    rope = LongRope(TINY)

    def at(x: torch.Tensor, pos: int) -> torch.Tensor:
        return apply_rotary(x, rope.tables(torch.tensor([[pos]]), "short", torch.float32))

    a = (at(q, 7) * at(k, 3)).sum()
    b = (at(q, 40) * at(k, 36)).sum()
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_tables_cast_to_compute_dtype():
    t = LongRope(TINY).tables(torch.arange(5)[None], "short", torch.bfloat16)
    assert isinstance(t, RopeTables)
    assert t.cos.dtype == t.sin.dtype == torch.bfloat16
    assert t.cos.shape == (1, 5, 12)
