"""LoRA layer: base equivalence, exact unmerged numerics, merge, switching (reference D, H.12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechkit.errors import ConfigError
from speechkit.model.config import DecoderConfig, LoraConfig, RopeConfig
from speechkit.model.decoder import Decoder
from speechkit.model.lora import LoRALinear, merge_lora

FP32_RTOL = 1e-5  # merged vs unmerged in fp32: one different summation order


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def random_layer(seed: int, dtype: torch.dtype = torch.float32) -> tuple[LoRALinear, torch.Tensor]:
    in_f, out_f, rank = 48, 40, 8
    gen = torch.Generator().manual_seed(seed)
    layer = LoRALinear(in_f, out_f, rank, scale=2.0)
    with torch.no_grad():
        layer.weight.copy_(0.2 * torch.randn(out_f, in_f, generator=gen))
        layer.lora_a.copy_(0.2 * torch.randn(rank, in_f, generator=gen))
        layer.lora_b.copy_(0.2 * torch.randn(out_f, rank, generator=gen))
    return layer.to(dtype), torch.randn(3, 5, in_f, generator=gen).to(dtype)


def test_fresh_adapter_is_a_no_op():
    layer = LoRALinear(48, 40, 8, scale=2.0)
    x = torch.randn(2, 48)
    assert torch.equal(layer.lora_b, torch.zeros(40, 8))
    assert torch.equal(layer(x), F.linear(x, layer.weight))


def test_b_zero_equals_base():
    layer, x = random_layer(0)
    with torch.no_grad():
        layer.lora_b.zero_()
    assert torch.equal(layer(x), F.linear(x, layer.weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unmerged_numerics_are_peft(dtype):
    # PEFT: base(x) + lora_B(lora_A(x)) * scaling, every op in the compute dtype.
    layer, x = random_layer(1, dtype)
    ref = F.linear(x, layer.weight) + F.linear(F.linear(x, layer.lora_a), layer.lora_b) * 2.0
    out = layer(x)
    assert out.dtype == dtype
    assert torch.equal(out, ref)


def test_disabled_equals_base():
    layer, x = random_layer(2)
    layer.enabled = False
    assert torch.equal(layer(x), F.linear(x, layer.weight))


def test_merge_lora_is_w_plus_scale_ba():
    layer, _ = random_layer(3)
    merged = merge_lora(layer.weight, layer.lora_a, layer.lora_b, 2.0)
    exact = layer.weight.double() + 2.0 * layer.lora_b.double() @ layer.lora_a.double()
    assert merged.dtype == torch.float32
    assert rel_err(merged, exact) <= 1e-6


def test_bf16_merge_rounds_once_from_fp32():
    layer, _ = random_layer(4, torch.bfloat16)
    merged = merge_lora(layer.weight, layer.lora_a, layer.lora_b, 2.0)
    expected = (layer.weight.float() + (layer.lora_b.float() @ layer.lora_a.float()) * 2.0).to(torch.bfloat16)
    assert merged.dtype == torch.bfloat16
    assert torch.equal(merged, expected)
    # a bf16 merge would round the delta first: measurably different on some entries
    bf16_merge = layer.weight + (layer.lora_b @ layer.lora_a) * 2.0
    assert not torch.equal(merged, bf16_merge)


def test_merged_equals_unmerged_and_drops_the_adapter():
    layer, x = random_layer(5)
    unmerged = layer(x)
    expected_weight = merge_lora(layer.weight, layer.lora_a, layer.lora_b, 2.0)
    layer.merge_()
    assert layer.mode == "merged"
    assert torch.equal(layer.weight, expected_weight)
    assert set(layer.state_dict()) == {"weight"}  # the base name is kept, adapter keys are gone
    assert rel_err(layer(x), unmerged) <= FP32_RTOL
    layer.enabled = True  # still on: allowed
    with pytest.raises(ConfigError, match="LoRA is merged into the base weights and cannot be switched off"):
        layer.enabled = False


def test_cannot_merge_a_disabled_adapter():
    layer, _ = random_layer(6)
    layer.enabled = False
    with pytest.raises(ConfigError, match="cannot merge a disabled LoRA adapter"):
        layer.merge_()


def test_state_dict_names():
    layer = LoRALinear(48, 40, 8, scale=2.0)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"weight": (40, 48), "lora_a": (8, 48), "lora_b": (40, 8)}


TINY = DecoderConfig(
    vocab_size=300, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
    rope=RopeConfig(rotary_dim=6, max_position_embeddings=256, original_max_position_embeddings=16,
                    short_factor=(1.0, 1.5, 2.0), long_factor=(1.0, 3.0, 9.0)),
)


def decoders(seed: int) -> tuple[Decoder, Decoder]:
    """A bare decoder and a LoRA decoder sharing its base weights, adapter random (B != 0)."""
    torch.manual_seed(seed)
    base = Decoder(TINY).eval()
    lora = Decoder(TINY, LoraConfig(rank=4, alpha=8.0)).eval()
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.2 * torch.randn(v.shape, generator=gen) for k, v in lora.state_dict().items()}
    lora.load_state_dict(state)
    base.load_state_dict({k: v for k, v in state.items() if not k.endswith((".lora_a", ".lora_b"))})
    return base, lora


def run(decoder: Decoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return decoder.logits(decoder(decoder.embed(x), torch.arange(x.shape[1])[None]))


def test_decoder_lora_targets_all_four_projections():
    _, lora = decoders(0)
    layer = lora.layers[0]
    targets = (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj)
    assert all(isinstance(module, LoRALinear) for module in targets)
    assert lora.lora_state == "unmerged"


def test_decoder_b_zero_and_disabled_equal_base():
    base, lora = decoders(1)
    x = torch.randint(0, 300, (1, 20))
    ref = run(base, x)
    assert rel_err(run(lora, x), ref) > 1e-2  # the adapter does something
    lora.set_lora_enabled(False)
    assert torch.equal(run(lora, x), ref)
    lora.set_lora_enabled(True)
    with torch.no_grad():
        for m in lora.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.zero_()
    assert torch.equal(run(lora, x), ref)


def test_decoder_merge_equals_unmerged():
    _, lora = decoders(2)
    x = torch.randint(0, 300, (1, 20))
    unmerged = run(lora, x)
    lora.merge_lora_()
    assert lora.lora_state == "merged"
    assert not any(k.endswith((".lora_a", ".lora_b")) for k in lora.state_dict())
    assert rel_err(run(lora, x), unmerged) <= FP32_RTOL
    with pytest.raises(ConfigError, match="cannot be switched off"):
        lora.set_lora_enabled(False)
