"""Frozen architecture configs, read from the checkpoint's own ``config.json`` (official schema).

One dataclass per component, composed into :class:`SpeechModelConfig`. Every field that the
released ``config.json`` carries is read from it; the few constants that the official code
hard-codes (and the config therefore cannot carry) are named here with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechkit.errors import CheckpointError, ConfigError

# The official encoder and the transformers port both hard-code this: inputs longer than this
# many subsampled tokens (40 s of audio) run through the Conformer in independent windows.
ENCODER_WINDOW_TOKENS = 500

# ``config.json`` marker of a merged export (``speechkit merge-lora``): the speech LoRA is folded into
# plain ``...qkv_proj.weight`` tensors and the checkpoint has no LoRA keys; bump the version on any change
MERGED_FORMAT = {"name": "speechkit-merged-speech-lora", "version": 1}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class EncoderConfig:
    """Conformer audio encoder (``audio_processor.config`` in the official schema)."""

    input_size: int = 80  # log-mel channels
    attention_dim: int = 1024
    attention_heads: int = 16
    linear_units: int = 1536  # FFN inner width, per GLU half
    num_blocks: int = 24
    conv_channels: int = 1024  # NeMo dw_striding subsampling channels
    time_reduction: int = 8
    kernel_size: int = 3  # causal depthwise conv
    bias_max_distance: int = 500  # T5 relative bias: table has 2 * this rows
    bias_symmetric: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check(
            self.attention_dim % self.attention_heads == 0,
            f"encoder attention_dim={self.attention_dim} is not divisible by "
            f"attention_heads={self.attention_heads}",
        )
        _check(
            self.time_reduction >= 2 and self.time_reduction & (self.time_reduction - 1) == 0,
            f"encoder time_reduction={self.time_reduction} must be a power of two >= 2",
        )
        _check(not self.bias_symmetric, "encoder symmetric relative bias is not supported")
        _check(self.kernel_size >= 1, f"encoder kernel_size={self.kernel_size} must be >= 1")

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.attention_heads

    @property
    def subsampling_stages(self) -> int:
        return int(math.log2(self.time_reduction))

    @property
    def subsampled_freq(self) -> int:
        """Mel axis width after the stride-2 conv stages (80 -> 10 for three stages)."""
        size = self.input_size
        for _ in range(self.subsampling_stages):
            size = (size - 1) // 2 + 1
        return size

    @classmethod
    def from_official(cls, audio_processor: dict[str, Any]) -> EncoderConfig:
        cfg = audio_processor.get("config")
        if audio_processor.get("name") != "cascades" or not isinstance(cfg, dict):
            raise ConfigError(
                f"audio_processor.name={audio_processor.get('name')!r}: only the 'cascades' "
                "Conformer of Phi-4-multimodal is supported"
            )
        _check(cfg.get("input_layer") == "nemo_conv", f"input_layer={cfg.get('input_layer')!r} unsupported")
        rel = cfg.get("relative_attention_bias_args") or {}
        _check(rel.get("type") == "t5", f"relative_attention_bias_args.type={rel.get('type')!r} unsupported")
        _check(
            cfg.get("causal", True) and not cfg.get("batch_norm", False),
            "only the released conv module (causal depthwise conv, no batch norm) is supported",
        )
        _check(
            cfg.get("chunk_size", -1) == -1,
            f"chunk_size={cfg.get('chunk_size')} (streaming masks) unsupported",
        )
        for key in ("activation", "conv_activation", "conv_glu_type"):
            _check(cfg.get(key, "swish") == "swish", f"{key}={cfg.get(key)!r} unsupported (expected 'swish')")
        for key, expected in (
            ("ext_pw_out_channel", cfg["attention_dim"]),
            ("depthwise_seperable_out_channel", cfg["attention_dim"]),
            ("depthwise_multiplier", 1),
            ("ext_pw_kernel_size", 1),
        ):
            _check(
                cfg.get(key, expected) == expected, f"{key}={cfg.get(key)} unsupported (expected {expected})"
            )
        _check(cfg.get("bias_in_glu", True), "bias_in_glu=false unsupported")
        return cls(
            input_size=cfg["input_size"],
            attention_dim=cfg["attention_dim"],
            attention_heads=cfg["attention_heads"],
            linear_units=cfg["linear_units"],
            num_blocks=cfg["num_blocks"],
            conv_channels=(cfg.get("nemo_conv_settings") or {}).get("conv_channels", cfg["attention_dim"]),
            time_reduction=cfg["time_reduction"],
            kernel_size=cfg["kernel_size"],
            bias_max_distance=rel.get("t5_bias_max_distance", 1000),
            bias_symmetric=rel.get("t5_bias_symmetric", False),
        )


@dataclass(frozen=True)
class ProjectorConfig:
    """Two-layer MLP from encoder width to decoder width (``embd_layer.audio_embd_layer``)."""

    input_dim: int = 1024
    output_dim: int = 3072

    def __post_init__(self) -> None:
        _check(self.input_dim > 0 and self.output_dim > 0, f"projector dims must be positive: {self}")


@dataclass(frozen=True)
class LoraConfig:
    """A LoRA adapter on the decoder linears (``speech_lora`` / ``vision_lora``)."""

    rank: int = 320
    alpha: float = 640.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

    def __post_init__(self) -> None:
        _check(self.rank > 0, f"LoRA rank={self.rank} must be positive")
        _check(self.alpha > 0, f"LoRA alpha={self.alpha} must be positive")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_official(cls, lora: dict[str, Any]) -> LoraConfig:
        return cls(rank=int(lora["r"]), alpha=float(lora["lora_alpha"]), dropout=float(lora.get("dp", 0.0)))


@dataclass(frozen=True)
class RopeConfig:
    """Partial rotary embedding with LongRoPE scaling (Phi-3/4 ``rope_scaling``)."""

    theta: float = 10000.0
    rotary_dim: int = 96
    max_position_embeddings: int = 131072
    original_max_position_embeddings: int = 4096
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        half = self.rotary_dim // 2
        _check(self.rotary_dim % 2 == 0, f"rotary_dim={self.rotary_dim} must be even")
        for name in ("short_factor", "long_factor"):
            factors = getattr(self, name)
            _check(
                len(factors) in (0, half),
                f"rope_scaling.{name} has {len(factors)} entries, expected rotary_dim/2={half}",
            )

    @property
    def attention_scale(self) -> float:
        """LongRoPE's cos/sin multiplier sqrt(1 + ln(max/orig) / ln(orig)); 1.0 when unscaled."""
        ratio = self.max_position_embeddings / self.original_max_position_embeddings
        if ratio <= 1.0 or not self.long_factor:
            return 1.0
        return math.sqrt(1 + math.log(ratio) / math.log(self.original_max_position_embeddings))


@dataclass(frozen=True)
class DecoderConfig:
    """Phi-4-mini decoder (top-level fields of the official ``config.json``)."""

    vocab_size: int = 200064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_layers: int = 32
    num_heads: int = 24
    num_kv_heads: int = 8
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    rope: RopeConfig = field(default_factory=RopeConfig)

    def __post_init__(self) -> None:
        _check(
            self.hidden_size % self.num_heads == 0,
            f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_heads}",
        )
        _check(
            self.num_heads % self.num_kv_heads == 0,
            f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}",
        )
        _check(
            self.rope.rotary_dim <= self.head_dim,
            f"rotary_dim={self.rope.rotary_dim} exceeds head_dim={self.head_dim}",
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_official(cls, cfg: dict[str, Any]) -> DecoderConfig:
        for key in ("attention_bias", "mlp_bias", "lm_head_bias"):
            _check(not cfg.get(key, False), f"{key}=true is not supported (Phi-4-mini has no biases)")
        _check(cfg.get("hidden_act", "silu") == "silu", f"hidden_act={cfg.get('hidden_act')!r} unsupported")
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        rotary_dim = int(head_dim * cfg.get("partial_rotary_factor", 1.0))
        scaling = cfg.get("rope_scaling") or {}
        if scaling:
            kind = scaling.get("type", scaling.get("rope_type"))
            _check(kind == "longrope", f"rope_scaling.type={kind!r} unsupported (expected 'longrope')")
        rope = RopeConfig(
            theta=float(cfg.get("rope_theta", 10000.0)),
            rotary_dim=rotary_dim,
            max_position_embeddings=cfg["max_position_embeddings"],
            original_max_position_embeddings=cfg.get(
                "original_max_position_embeddings", cfg["max_position_embeddings"]
            ),
            short_factor=tuple(float(x) for x in scaling.get("short_factor", ())),
            long_factor=tuple(float(x) for x in scaling.get("long_factor", ())),
        )
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
            rope=rope,
        )


@dataclass(frozen=True)
class SpeechModelConfig:
    """Everything the speech branch needs, composed from one official ``config.json``."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    speech_lora: LoraConfig | None = field(default_factory=LoraConfig)
    dtype: str = "bfloat16"  # the checkpoint's storage dtype (``torch_dtype``)
    lora_merged: bool = False  # a merged export: speech LoRA folded into the base weights, no LoRA keys

    def __post_init__(self) -> None:
        _check(
            self.projector.input_dim == self.encoder.attention_dim,
            f"projector input {self.projector.input_dim} != encoder width {self.encoder.attention_dim}",
        )
        _check(
            self.projector.output_dim == self.decoder.hidden_size,
            f"projector output {self.projector.output_dim} != decoder width {self.decoder.hidden_size}",
        )

    @classmethod
    def from_official(cls, cfg: dict[str, Any]) -> SpeechModelConfig:
        """Build from the dict of an official (remote-code, ``phi4mm``) ``config.json``."""
        if "audio_processor" not in cfg:
            raise ConfigError("config.json has no 'audio_processor': not a Phi-4-multimodal checkpoint")
        audio_layer = (cfg.get("embd_layer") or {}).get("audio_embd_layer") or {}
        _check(
            audio_layer.get("projection_cls", "mlp") == "mlp"
            and audio_layer.get("downsample_rate", 1) == 1
            and not audio_layer.get("use_qformer", False)
            and not audio_layer.get("use_conv_downsample", False),
            f"embd_layer.audio_embd_layer={audio_layer} unsupported (expected the released mlp projector)",
        )
        encoder = EncoderConfig.from_official(cfg["audio_processor"])
        lora = cfg.get("speech_lora")
        merged = "speechkit_format" in cfg
        _check(
            not merged or cfg["speechkit_format"] == MERGED_FORMAT,
            f"speechkit_format={cfg.get('speechkit_format')}: this speechkit reads {MERGED_FORMAT}; upgrade speechkit",
        )
        return cls(
            encoder=encoder,
            projector=ProjectorConfig(encoder.attention_dim, cfg["hidden_size"]),
            decoder=DecoderConfig.from_official(cfg),
            speech_lora=LoraConfig.from_official(lora) if lora and not merged else None,
            dtype=cfg.get("torch_dtype", "bfloat16"),
            lora_merged=merged,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> SpeechModelConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: config.json not found; point --model at a checkpoint directory"
            ) from None
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        try:
            return cls.from_official(raw)
        except KeyError as err:
            raise CheckpointError(f"{path}: missing field {err.args[0]!r}") from None
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from None
