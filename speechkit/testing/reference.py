"""The transformers port as a numerical oracle for tests (never imported by speechkit at run time)."""

from __future__ import annotations

from typing import Any

import torch

from speechkit.model.config import SpeechModelConfig

# speechkit projector names -> the port's (the encoder names are the same)
_PROJECTOR_NAMES = {
    "projector.speech.up.": "up_proj_for_speech.",
    "projector.speech.down.": "down_proj_for_speech.",
    "projector.vision_speech.up.": "up_proj_for_vision_speech.",
    "projector.vision_speech.down.": "down_proj_for_vision_speech.",
}


def port_audio_config(config: SpeechModelConfig) -> dict[str, Any]:
    """The port's ``audio_config`` for our encoder config."""
    enc = config.encoder
    return dict(
        hidden_size=enc.attention_dim,
        intermediate_size=enc.linear_units,
        num_blocks=enc.num_blocks,
        num_attention_heads=enc.attention_heads,
        nemo_conv_channels=enc.conv_channels,
        ext_pw_out_channel=enc.attention_dim,
        depthwise_separable_out_channel=enc.attention_dim,
        kernel_size=enc.kernel_size,
        bias_max_distance=enc.bias_max_distance,
        time_reduction=enc.time_reduction,
        input_size=enc.input_size,
    )


def port_audio_embedding(config: SpeechModelConfig, tower_state: dict[str, torch.Tensor]):
    """The port's ``Phi4MultimodalAudioEmbedding`` (encoder + both projectors) holding our weights."""
    from transformers import Phi4MultimodalConfig
    from transformers.models.phi4_multimodal.modeling_phi4_multimodal import Phi4MultimodalAudioEmbedding

    port_config = Phi4MultimodalConfig(hidden_size=config.decoder.hidden_size, audio_config=port_audio_config(config))
    port = Phi4MultimodalAudioEmbedding(port_config)
    state = port_state({"audio." + k: v for k, v in tower_state.items()}, lora_scale=None)
    port.load_state_dict({k.removeprefix("model.embed_tokens_extend.audio_embed."): v for k, v in state.items()})
    return port.eval()


def port_speech_embeddings(port, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Encoder then speech projector of the port: (B, T, 80) -> (B, ceil(T/8), hidden)."""
    hidden = port.encoder(features.to(port.up_proj_for_speech.weight.dtype), mask)
    return port.down_proj_for_speech(torch.nn.functional.gelu(port.up_proj_for_speech(hidden)))


# fields of the official config.json that the port's Phi4MultimodalConfig reads under the same names
_DECODER_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "partial_rotary_factor",
    "rope_theta",
    "rope_scaling",
    "rms_norm_eps",
    "tie_word_embeddings",
)
_TINY_VISION = dict(
    hidden_size=16,
    intermediate_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
    crop_size=28,
)


def port_state(state: dict[str, torch.Tensor], lora_scale: float | None) -> dict[str, torch.Tensor]:
    """Our state dict (unmerged LoRA) in the port's names; LoRA merged by hand as W + scale * B @ A in fp32
    (``lora_scale=None`` drops the adapter and keeps the base weights)."""
    out = {}
    for name, tensor in state.items():
        if name.endswith((".lora_a", ".lora_b")):
            continue
        if name.startswith("audio."):
            key = name.removeprefix("audio.")
            for ours, theirs in _PROJECTOR_NAMES.items():
                key = key.replace(ours, theirs)
            out["model.embed_tokens_extend.audio_embed." + key] = tensor
            continue
        key = "model." + name.removeprefix("decoder.")
        stem = name.removesuffix(".weight")
        if lora_scale is not None and stem + ".lora_a" in state:
            a, b = state[stem + ".lora_a"].float(), state[stem + ".lora_b"].float()
            tensor = (tensor.float() + lora_scale * (b @ a)).to(tensor.dtype)
        out[key] = tensor
    return out


def port_config(official: dict[str, Any], attn: str = "eager"):
    """The port's ``Phi4MultimodalConfig`` for an official ``config.json`` (vision tower shrunk: never used)."""
    from transformers import Phi4MultimodalConfig

    return Phi4MultimodalConfig(
        **{k: official[k] for k in _DECODER_FIELDS},
        audio_config=port_audio_config(SpeechModelConfig.from_official(official)),
        vision_config=_TINY_VISION,
        attn_implementation=attn,
    )


def port_causal_lm(
    official: dict[str, Any], state: dict[str, torch.Tensor], *, lora_scale: float | None, attn: str = "eager"
):
    """The port's ``Phi4MultimodalForCausalLM`` with our weights (see :func:`port_state`), eval mode."""
    from transformers import Phi4MultimodalForCausalLM

    device = next(iter(state.values())).device
    dtype = state["decoder.embed_tokens.weight"].dtype
    with torch.device(device):
        port = Phi4MultimodalForCausalLM(port_config(official, attn)).to(dtype)
    missing, unexpected = port.load_state_dict(port_state(state, lora_scale), strict=False)
    leftover = [k for k in missing if "image_embed" not in k and k != "lm_head.weight"]
    if leftover or unexpected:
        raise AssertionError(f"port weights not accounted for: missing {leftover[:3]}, unexpected {unexpected[:3]}")
    port.tie_weights()
    return port.eval()
