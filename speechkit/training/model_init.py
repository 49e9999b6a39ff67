"""A model of the released architecture at a small size, built from scratch with its own tokenizer.

The official ``config.json`` is the released one with the sizes of a :class:`ModelSpec` and the
tokenizer's vocabulary and ids, so the trained model saves and loads like the released checkpoint.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from speechkit.model.config import SpeechModelConfig
from speechkit.model.encoder import GlobalNorm
from speechkit.model.lora import LoRALinear
from speechkit.model.speech_model import SpeechModel
from speechkit.model.subsampling import ConvSubsampling
from speechkit.testing.checkpoint import released_config
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.config import ModelSpec


def official_config(spec: ModelSpec, tokenizer: Tokenizer, vocab_size: int) -> dict[str, Any]:
    """The released official ``config.json`` with ``spec``'s sizes and the tokenizer's ids."""
    cfg = copy.deepcopy(released_config())
    audio = cfg["audio_processor"]["config"]
    audio.update(
        attention_dim=spec.encoder_dim, attention_heads=spec.encoder_heads,
        linear_units=spec.encoder_linear_units, num_blocks=spec.encoder_blocks,
        nemo_conv_settings={"conv_channels": spec.conv_channels},
        ext_pw_out_channel=spec.encoder_dim, depthwise_seperable_out_channel=spec.encoder_dim,
    )  # fmt: skip
    head_dim = spec.decoder_dim // spec.decoder_heads
    rotary_half = int(head_dim * cfg["partial_rotary_factor"]) // 2
    scaling = cfg["rope_scaling"]

    def resample(factors: list[float]) -> list[float]:  # the released per-frequency factors, subsampled
        return [factors[i * len(factors) // rotary_half] for i in range(rotary_half)]

    eos = tokenizer.special.endoftext
    cfg.update(
        hidden_size=spec.decoder_dim, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.decoder_layers, num_attention_heads=spec.decoder_heads,
        num_key_value_heads=spec.decoder_kv_heads, vocab_size=vocab_size,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, _name_or_path="speechkit-trained",
        rope_scaling={"type": "longrope", "short_factor": resample(scaling["short_factor"]),
                      "long_factor": resample(scaling["long_factor"])},
    )  # fmt: skip
    cfg["speech_lora"].update(r=spec.lora_rank, lora_alpha=spec.lora_alpha, dp=0.0)
    cfg["vision_lora"].update(r=spec.lora_rank, lora_alpha=spec.lora_alpha)
    cfg.pop("_attn_implementation", None)
    return cfg


def build_model(official: dict[str, Any], tokenizer: Tokenizer, init_std: float, seed: int) -> SpeechModel:
    """A freshly initialised fp32 :class:`SpeechModel` for an official config dict."""
    config = SpeechModelConfig.from_official(official)
    torch.manual_seed(seed)
    model = SpeechModel(config, tokenizer.special.audio)
    init_weights_(model, init_std, seed)
    return model


@torch.no_grad()
def init_weights_(model: nn.Module, std: float, seed: int) -> None:
    """GPT-style init: linear/embedding weights N(0, std), output projections scaled by depth, biases 0,
    norms 1, LoRA A as nn.Linear and B = 0 (a fresh adapter changes nothing).

    PyTorch's defaults would give the tied embedding N(0, 1) and logits of size sqrt(width).
    """
    gen = torch.Generator().manual_seed(seed)
    layers = sum(1 for name, _ in model.named_modules() if name.startswith("decoder.layers.") and name.count(".") == 2)
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * _scale(name, std, layers))
            bound = 1 / math.sqrt(module.in_features)
            module.lora_a.copy_(torch.rand(module.lora_a.shape, generator=gen) * 2 * bound - bound)
            module.lora_b.zero_()
        elif isinstance(module, nn.Linear | nn.Embedding):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * _scale(name, std, layers))
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, GlobalNorm):
            module.global_mean.zero_()
            module.global_invstd.fill_(1.0)
    init_subsampling_(model.audio.encoder.embed, gen)


@torch.no_grad()
def init_subsampling_(embed: ConvSubsampling, gen: torch.Generator) -> None:
    """He-normal convolutions (gain sqrt(2) before a ReLU, 1 before the pointwise conv that follows a
    depthwise one) and a 1/sqrt(fan_in) output projection: normalised log-mel keeps unit scale to the first
    block. PyTorch's conv default and N(0, 0.02) shrank it to std 0.05 at width 256, and the encoder then
    stayed on the CTC plateau (a char CTC probe left it by step ~400 with this init, not by 1,500 without:
    recipes/synthetic_demo/RESULTS.md)."""
    layers = list(embed.conv)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            before_relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            fan_in = layer.weight[0].numel()
            gain = math.sqrt(2.0) if before_relu else 1.0
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * gain / math.sqrt(fan_in))
            layer.bias.zero_()
    out = embed.out
    out.weight.copy_(torch.randn(out.weight.shape, generator=gen) / math.sqrt(out.in_features))


def _scale(name: str, std: float, layers: int) -> float:
    # residual-branch outputs shrink with depth so the residual stream starts near its input (GPT-2)
    if name.endswith(("o_proj", "down_proj")) and layers:
        return std / math.sqrt(2 * layers)
    return std


@torch.no_grad()
def set_feature_stats_(model: SpeechModel, features: torch.Tensor, lengths: torch.Tensor) -> None:
    """Set the encoder's per-channel log-mel mean and inverse std from valid frames of (B, T, 80) features."""
    valid = torch.arange(features.shape[1])[None, :] < lengths[:, None]
    frames = features[valid].double()  # (N, 80)
    norm = model.audio.encoder.encoder_embedding
    norm.global_mean.copy_(frames.mean(0).to(norm.global_mean.dtype))
    norm.global_invstd.copy_((1.0 / frames.std(0).clamp_min(1e-3)).to(norm.global_invstd.dtype))


def count_parameters(model: nn.Module) -> int:
    """Parameters that the saved model holds (both projectors and the adapter included)."""
    return sum(p.numel() for p in model.parameters())
