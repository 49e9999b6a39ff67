"""Tiny random checkpoints in the official Phi-4-multimodal layout, for tests.

The writer works from the official key names and shapes alone (reference G.2), not from
speechkit's modules, so a test that loads what it wrote checks the converter independently.
Every tensor is random, including GLU biases, normaliser statistics, norms and LoRA B: the
zeros and ones that initialisers produce would hide bugs.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from speechkit.model.convert_official import AUDIO_PREFIX, VISION_PREFIX

if TYPE_CHECKING:
    from speechkit.model.speech_model import SpeechModel

RELEASED_CONFIG = Path(__file__).with_name("released_config.json")

PREPROCESSOR_CONFIG = {
    "audio_compression_rate": 8,
    "audio_downsample_rate": 1,
    "audio_feat_stride": 1,
    "dynamic_hd": 36,
    "feature_extractor_type": "Phi4MMAudioFeatureExtractor",
    "image_processor_type": "Phi4MMImageProcessor",
    "processor_class": "Phi4MMProcessor",
}


def released_config() -> dict[str, Any]:
    """The released model's official ``config.json`` as a dict."""
    return json.loads(RELEASED_CONFIG.read_text())


def tiny_config(
    *,
    encoder_dim: int = 64,
    encoder_heads: int = 4,
    encoder_blocks: int = 2,
    decoder_dim: int = 64,
    decoder_layers: int = 2,
    lora_rank: int = 8,
) -> dict[str, Any]:
    """The released ``config.json`` with sizes shrunk; ids, vocabulary and RoPE ranges unchanged."""
    cfg = copy.deepcopy(released_config())
    audio = cfg["audio_processor"]["config"]
    audio.update(
        attention_dim=encoder_dim,
        attention_heads=encoder_heads,
        linear_units=encoder_dim * 3 // 4,
        num_blocks=encoder_blocks,
        nemo_conv_settings={"conv_channels": encoder_dim // 2},
        ext_pw_out_channel=encoder_dim,
        depthwise_seperable_out_channel=encoder_dim,
    )
    heads = 4
    head_dim = decoder_dim // heads
    rotary_half = int(head_dim * cfg["partial_rotary_factor"]) // 2
    long = cfg["rope_scaling"]["long_factor"]
    cfg.update(
        hidden_size=decoder_dim,
        intermediate_size=decoder_dim * 3 // 2,
        num_hidden_layers=decoder_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        rope_scaling={
            "type": "longrope",
            # short factors not all ones either, so a wrong choice of table shows
            "short_factor": [1.0 + 0.05 * i for i in range(rotary_half)],
            "long_factor": [long[i * len(long) // rotary_half] for i in range(rotary_half)],
        },
    )
    cfg["speech_lora"].update(r=lora_rank, lora_alpha=2 * lora_rank)
    cfg["vision_lora"].update(r=lora_rank // 2, lora_alpha=lora_rank)
    return cfg


def official_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of an official checkpoint's speech path (plus LoRAs and a stub vision tower)."""
    a = cfg["audio_processor"]["config"]
    d, u, ch, heads = (
        a["attention_dim"],
        a["linear_units"],
        a["nemo_conv_settings"]["conv_channels"],
        a["attention_heads"],
    )
    freq = a["input_size"]
    for _ in range(3):
        freq = (freq - 1) // 2 + 1
    enc = AUDIO_PREFIX + "encoder."
    shapes: dict[str, tuple[int, ...]] = {
        enc + "encoder_embedding.global_mean": (a["input_size"],),
        enc + "encoder_embedding.global_invstd": (a["input_size"],),
        enc + "embed.conv.0.weight": (ch, 1, 3, 3),
        enc + "embed.conv.0.bias": (ch,),
        enc + "embed.out.weight": (d, ch * freq),
        enc + "embed.out.bias": (d,),
        enc + "relative_attention_bias_layer.bias_values.weight": (
            2 * a["relative_attention_bias_args"]["t5_bias_max_distance"],
            heads,
        ),
    }
    for i in (2, 5):
        shapes |= {
            enc + f"embed.conv.{i}.weight": (ch, 1, 3, 3),
            enc + f"embed.conv.{i}.bias": (ch,),
            enc + f"embed.conv.{i + 1}.weight": (ch, ch, 1, 1),
            enc + f"embed.conv.{i + 1}.bias": (ch,),
        }
    for b in range(a["num_blocks"]):
        p = enc + f"encoders.{b}."
        for ff in ("feed_forward_in", "feed_forward_out"):
            shapes |= {
                p + f"{ff}.layer_norm.weight": (d,),
                p + f"{ff}.layer_norm.bias": (d,),
                p + f"{ff}.net.0.linear.weight": (2 * u, d),
                p + f"{ff}.net.0.linear.bias": (2 * u,),
                p + f"{ff}.net.2.weight": (d, u),
                p + f"{ff}.net.2.bias": (d,),
            }
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            shapes |= {p + f"self_attn.{lin}.weight": (d, d), p + f"self_attn.{lin}.bias": (d,)}
        shapes |= {
            p + "conv.layer_norm.weight": (d,),
            p + "conv.layer_norm.bias": (d,),
            p + "conv.glu.ext_pw_conv_1d.weight": (2 * d, d, 1),
            p + "conv.glu.ext_pw_conv_1d.bias": (2 * d,),
            p + "conv.glu.b1": (1, d, 1),
            p + "conv.glu.b2": (1, d, 1),
            p + "conv.dw_sep_conv_1d.dw_conv.weight": (d, 1, a["kernel_size"]),
            p + "conv.dw_sep_conv_1d.dw_conv.bias": (d,),
            p + "conv.dw_sep_conv_1d.pw_conv.weight": (d, d, 1),
            p + "conv.dw_sep_conv_1d.pw_conv.bias": (d,),
            p + "conv.ext_pw_conv_1d.weight": (d, d, 1),
            p + "conv.ext_pw_conv_1d.bias": (d,),
            p + "layer_norm_att.weight": (d,),
            p + "layer_norm_att.bias": (d,),
            p + "layer_norm.weight": (d,),
            p + "layer_norm.bias": (d,),
        }
    hidden = cfg["hidden_size"]
    for proj in ("speech", "vision"):
        p = AUDIO_PREFIX + f"audio_projection.{proj}."
        shapes |= {
            p + "0.weight": (hidden, d),
            p + "0.bias": (hidden,),
            p + "2.weight": (hidden, hidden),
            p + "2.bias": (hidden,),
        }
    return (
        shapes
        | _decoder_shapes(cfg)
        | {
            # a stand-in for the vision tower: the loader must skip it without reading it
            VISION_PREFIX + "img_processor.embeddings.patch_embedding.weight": (8, 3, 2, 2),
            VISION_PREFIX + "glb_GN": (1, 1, 8),
        }
    )


def _decoder_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    head_dim = hidden // cfg["num_attention_heads"]
    qkv = (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * head_dim
    outs_ins = {
        "self_attn.qkv_proj": (qkv, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_up_proj": (2 * inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (cfg["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
        for name, (out, inp) in outs_ins.items():
            shapes[p + f"{name}.base_layer.weight"] = (out, inp)
            for adapter, rank in (("speech", cfg["speech_lora"]["r"]), ("vision", cfg["vision_lora"]["r"])):
                shapes[p + f"{name}.lora_A.{adapter}.weight"] = (rank, inp)
                shapes[p + f"{name}.lora_B.{adapter}.weight"] = (out, rank)
    return shapes


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A random value for ``key`` on a sensible scale (norm weights near 1, invstd positive)."""
    if key.endswith("global_mean"):
        return 6.0 + 2.0 * torch.rand(shape, generator=generator)
    if key.endswith("global_invstd"):
        return 0.2 + 0.3 * torch.rand(shape, generator=generator)
    x = torch.randn(shape, generator=generator)
    if "norm" in key and len(shape) == 1:
        return 1.0 + 0.2 * x
    if len(shape) == 1 or key.endswith((".b1", ".b2")):
        return 0.1 * x
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    scale = 0.02 if "embed_tokens" in key else fan_in**-0.5
    if "lora_B" in key or key.endswith(".lora_b"):
        scale = 0.5 * scale  # non-zero, so LoRA changes the output measurably
    return scale * x


def write_random_checkpoint(
    root: str | Path,
    cfg: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    shard_bytes: int = 0,
    device: str = "cpu",
) -> Path:
    """Write a random checkpoint in the official layout to ``root`` and return it.

    Files: config.json, generation_config.json, preprocessor_config.json, tokenizer.json (special
    tokens at the released ids), safetensors shards and model.safetensors.index.json. With the
    default ``shard_bytes=0`` there are two shards (layer 0 and the embedding first, as released);
    otherwise shards of about ``shard_bytes`` are written one at a time, so a full-size checkpoint
    (``cfg=released_config()``) never sits in memory whole. ``device`` draws the random numbers.
    """
    from speechkit.testing.tokenizer import write_tiny_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = cfg or tiny_config()
    shapes = official_shapes(cfg)
    groups = _shard_groups(shapes, dtype, shard_bytes)
    gen = torch.Generator(device).manual_seed(seed)
    weight_map, total = {}, 0
    for n, keys in enumerate(groups, start=1):
        name = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
        with torch.device(device):
            tensors = {k: random_tensor(k, shapes[k], gen).to(dtype).contiguous().cpu() for k in keys}
        save_file(tensors, str(root / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map |= dict.fromkeys(keys, name)
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    (root / "config.json").write_text(json.dumps(cfg, indent=2))
    (root / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    write_tiny_tokenizer(root)
    return root


def write_talking_checkpoint(root: str | Path, cfg: dict[str, Any] | None = None, *, seed: int = 0,
                             shard_bytes: int = 0, device: str = "cpu") -> Path:  # fmt: skip
    """:func:`write_random_checkpoint` (same arguments) whose decoder always talks: every embedding row outside
    the tiny tokenizer's BPE symbols (special tokens, end of text, the unused ids up to ``vocab_size``) is zeroed.

    The output head is tied to the embeddings, so those tokens score 0 while the largest of ~600 random
    scores is positive: every decode runs to its ``max_new_tokens`` and yields junk text, never the empty
    text a plain random model mostly gives (its argmax lands on ids the tokenizer cannot spell). Streaming
    and server tests need that: the engine sends no final message for a segment without words.
    """
    from safetensors.torch import load_file

    from speechkit.testing.tokenizer import SPECIAL_TOKENS

    root = write_random_checkpoint(root, cfg, seed=seed, shard_bytes=shard_bytes, device=device)
    vocab = json.loads((root / "tokenizer.json").read_text())["model"]["vocab"]
    spelled = 1 + max(i for i in vocab.values() if i not in SPECIAL_TOKENS)
    key = "model.embed_tokens.weight"
    shard = root / json.loads((root / "model.safetensors.index.json").read_text())["weight_map"][key]
    tensors = load_file(str(shard))
    tensors[key][spelled:] = 0
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return root


def _shard_groups(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, shard_bytes: int) -> list[list[str]]:
    names = list(shapes)
    if not shard_bytes:
        first = [k for k in names if k.startswith("model.layers.0.") or k == "model.embed_tokens.weight"]
        return [first, [k for k in names if k not in set(first)]]
    order = ["model.embed_tokens.weight"] + [k for k in names if k != "model.embed_tokens.weight"]
    groups: list[list[str]] = [[]]
    size = 0
    for key in order:
        nbytes = math.prod(shapes[key]) * torch.empty((), dtype=dtype).element_size()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    return groups


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter and buffer of a speechkit module in place with :func:`random_tensor` values."""
    state = module.state_dict()
    device = next(iter(state.values())).device
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad(), torch.device(device):
        for name, tensor in state.items():
            tensor.copy_(random_tensor(name, tuple(tensor.shape), gen))


def random_speech_model(
    cfg: dict[str, Any], audio_token_id: int, *, device: str | torch.device, dtype: torch.dtype, seed: int = 0
) -> SpeechModel:
    """A ``SpeechModel`` of an official ``config.json`` (speech LoRA unmerged) filled with :func:`randomize_`
    values on ``device``: built on the meta device, no checkpoint on disk, so a full-size model
    (``released_config()``) takes seconds on a GPU. The values differ from :func:`write_random_checkpoint`'s."""
    # imported here: the writers above work from the official key names alone, not from speechkit's modules
    from speechkit.model.config import SpeechModelConfig
    from speechkit.model.speech_model import SpeechModel

    with torch.device("meta"):
        model = SpeechModel(SpeechModelConfig.from_official(cfg), audio_token_id)
    model = model.to_empty(device=device).to(dtype)
    randomize_(model, seed=seed)
    return model
