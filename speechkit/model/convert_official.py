"""Key map between the official remote-code checkpoint (``Phi4MMForCausalLM``) and speechkit.

The official names are listed in reference G.2. speechkit's names are the transformers port's
for the encoder (reference G.3) and plain decoder names whose LoRA factors sit beside the base
weight (``qkv_proj.weight``, ``qkv_proj.lora_a``, ``qkv_proj.lora_b``).

Every official key is either mapped, or skipped by an explicit rule (vision tower, vision
LoRA, vision-speech projector when unwanted), or unknown, which the loader treats as an error.
"""

from __future__ import annotations

import re

AUDIO_PREFIX = "model.embed_tokens_extend.audio_embed."
VISION_PREFIX = "model.embed_tokens_extend.image_embed."

# (official regex, speechkit template): first match wins; applied to the full key
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        # --- audio encoder ---
        (
            r"^model\.embed_tokens_extend\.audio_embed\.encoder\.encoders\.(\d+)\.feed_forward_(in|out)\.net\.0\.linear\.(weight|bias)$",
            r"audio.encoder.encoders.\1.feed_forward_\2.gate_up_proj.\3",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.encoder\.encoders\.(\d+)\.feed_forward_(in|out)\.net\.2\.(weight|bias)$",
            r"audio.encoder.encoders.\1.feed_forward_\2.down_proj.\3",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.encoder\.encoders\.(\d+)\.self_attn\.linear_([qkv])\.(weight|bias)$",
            r"audio.encoder.encoders.\1.self_attn.\2_proj.\3",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.encoder\.encoders\.(\d+)\.self_attn\.linear_out\.(weight|bias)$",
            r"audio.encoder.encoders.\1.self_attn.o_proj.\2",
        ),
        (r"^model\.embed_tokens_extend\.audio_embed\.encoder\.(.+)$", r"audio.encoder.\1"),
        # --- projectors ---
        (
            r"^model\.embed_tokens_extend\.audio_embed\.audio_projection\.speech\.0\.(weight|bias)$",
            r"audio.projector.speech.up.\1",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.audio_projection\.speech\.2\.(weight|bias)$",
            r"audio.projector.speech.down.\1",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.audio_projection\.vision\.0\.(weight|bias)$",
            r"audio.projector.vision_speech.up.\1",
        ),
        (
            r"^model\.embed_tokens_extend\.audio_embed\.audio_projection\.vision\.2\.(weight|bias)$",
            r"audio.projector.vision_speech.down.\1",
        ),
        # --- decoder ---
        (r"^model\.embed_tokens\.weight$", r"decoder.embed_tokens.weight"),
        (r"^model\.norm\.weight$", r"decoder.norm.weight"),
        (r"^lm_head\.weight$", r"decoder.lm_head.weight"),
        (
            r"^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$",
            r"decoder.layers.\1.\2.weight",
        ),
        (
            r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)\.base_layer\.weight$",
            r"decoder.layers.\1.\2.\3.weight",
        ),
        # a checkpoint saved without LoRA wrappers (merged export) has plain names
        (
            r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)\.weight$",
            r"decoder.layers.\1.\2.\3.weight",
        ),
        (
            r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)\.lora_A\.speech\.weight$",
            r"decoder.layers.\1.\2.\3.lora_a",
        ),
        (
            r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)\.lora_B\.speech\.weight$",
            r"decoder.layers.\1.\2.\3.lora_b",
        ),
    )
)

# keys speechkit never loads: the vision tower and the vision LoRA
_SKIP = (
    re.compile(r"^model\.embed_tokens_extend\.image_embed\."),
    re.compile(r"\.lora_[AB]\.vision\.weight$"),
)

_VISION_SPEECH_PROJECTOR = re.compile(r"\.audio_projection\.vision\.")


def official_to_ours(key: str) -> str | None:
    """speechkit name for an official key, or None when a rule says speechkit never loads it.

    Raises:
        KeyError: for a key no rule knows (the loader reports it as unexpected).
    """
    if any(p.search(key) for p in _SKIP):
        return None
    for pattern, template in _RULES:
        if pattern.match(key):
            return pattern.sub(template, key)
    raise KeyError(key)


def ours_to_official(name: str) -> str:
    """Inverse map, used by tests and by writers of official-layout checkpoints."""
    rules = (
        (
            r"^audio\.encoder\.encoders\.(\d+)\.feed_forward_(in|out)\.gate_up_proj\.",
            r"ENC.encoders.\1.feed_forward_\2.net.0.linear.",
        ),
        (
            r"^audio\.encoder\.encoders\.(\d+)\.feed_forward_(in|out)\.down_proj\.",
            r"ENC.encoders.\1.feed_forward_\2.net.2.",
        ),
        (
            r"^audio\.encoder\.encoders\.(\d+)\.self_attn\.([qkv])_proj\.",
            r"ENC.encoders.\1.self_attn.linear_\2.",
        ),
        (r"^audio\.encoder\.encoders\.(\d+)\.self_attn\.o_proj\.", r"ENC.encoders.\1.self_attn.linear_out."),
        (r"^audio\.encoder\.", r"ENC."),
        (r"^audio\.projector\.speech\.up\.", AUDIO_PREFIX + "audio_projection.speech.0."),
        (r"^audio\.projector\.speech\.down\.", AUDIO_PREFIX + "audio_projection.speech.2."),
        (r"^audio\.projector\.vision_speech\.up\.", AUDIO_PREFIX + "audio_projection.vision.0."),
        (r"^audio\.projector\.vision_speech\.down\.", AUDIO_PREFIX + "audio_projection.vision.2."),
        (r"^decoder\.lm_head\.weight$", "lm_head.weight"),
        (
            r"^decoder\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight$",
            r"model.layers.\1.\2.\3.base_layer.weight",
        ),
        (
            r"^decoder\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_a$",
            r"model.layers.\1.\2.\3.lora_A.speech.weight",
        ),
        (
            r"^decoder\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_b$",
            r"model.layers.\1.\2.\3.lora_B.speech.weight",
        ),
        (r"^decoder\.", "model."),
    )
    for pattern, template in rules:
        if re.match(pattern, name):
            return re.sub(pattern, template, name).replace("ENC.", AUDIO_PREFIX + "encoder.", 1)
    raise KeyError(name)


def is_vision_speech_projector(key: str) -> bool:
    return bool(_VISION_SPEECH_PROJECTOR.search(key))
