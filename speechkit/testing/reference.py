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

    port_config = Phi4MultimodalConfig(
        hidden_size=config.decoder.hidden_size, audio_config=port_audio_config(config)
    )
    port = Phi4MultimodalAudioEmbedding(port_config)
    state = {}
    for name, tensor in tower_state.items():
        for ours, theirs in _PROJECTOR_NAMES.items():
            name = name.replace(ours, theirs)
        state[name] = tensor
    port.load_state_dict(state, strict=True)
    return port.eval()


def port_speech_embeddings(port, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Encoder then speech projector of the port: (B, T, 80) -> (B, ceil(T/8), hidden)."""
    hidden = port.encoder(features.to(port.up_proj_for_speech.weight.dtype), mask)
    return port.down_proj_for_speech(torch.nn.functional.gelu(port.up_proj_for_speech(hidden)))
