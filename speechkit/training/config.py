"""Training configuration: frozen dataclasses parsed from the recipe YAML, with ``key=value`` overrides.

The recipe file has a ``model`` section (the architecture of a model trained from scratch; absent when
fine-tuning a released checkpoint) and a ``train`` section (everything else). Every hyperparameter is
declared here once; unknown keys are errors that name the key and the known ones.

Overrides address a key by its dotted path, list items by index, and take YAML values::

    train.seed=1  train.stages.2.max_steps=500  train.specaugment.time_masks=0
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechkit.errors import ConfigError

TRAINABLE_GROUPS = ("encoder", "projector", "decoder", "lora")
TASK_NAMES = ("asr", "ast", "ast_cot")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a model trained from scratch (the released config with these sizes)."""

    encoder_dim: int = 256
    encoder_heads: int = 4
    encoder_blocks: int = 4
    encoder_linear_units: int = 512  # Conformer FFN inner width per GLU half
    conv_channels: int = 128  # subsampling channels
    decoder_dim: int = 256
    decoder_layers: int = 4
    decoder_heads: int = 4
    decoder_kv_heads: int = 2
    intermediate_size: int = 768
    lora_rank: int = 16
    lora_alpha: float = 32.0
    init_std: float = 0.02  # normal init of linear and embedding weights

    def __post_init__(self) -> None:
        if self.decoder_dim % self.decoder_heads or self.decoder_heads % self.decoder_kv_heads:
            raise ConfigError(
                f"model: decoder_dim={self.decoder_dim}, decoder_heads={self.decoder_heads}, "
                f"decoder_kv_heads={self.decoder_kv_heads} do not divide"
            )


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Masks on the log-mel features of training batches (SpecAugment without time warping)."""

    freq_masks: int = 2
    freq_width: int = 15  # at most this many mel channels per mask
    time_masks: int = 4
    time_width: int = 40  # at most this many frames (10 ms each) per mask
    max_time_ratio: float = 0.2  # and at most this share of an utterance per mask


@dataclass(frozen=True)
class StageConfig:
    """One stage: what data, which parameters train, whether LoRA is applied, and its schedule.

    ``data``: ``text`` (decoder language modelling on transcripts and translations, loss on every
    token) or ``speech`` (prompted tasks, loss on answer tokens only). ``trainable`` names groups of
    :data:`TRAINABLE_GROUPS`; everything else is frozen. ``tasks`` weights the speech tasks.
    The schedule ends at ``max_steps`` or after ``max_seconds`` of training (0: no clock), whichever
    comes first; warm-up is linear, then cosine decay to ``min_lr_ratio * lr`` over the stage's
    progress (the larger of the step and clock fractions).
    """

    name: str
    data: Literal["text", "speech"]
    trainable: tuple[str, ...]
    lora: bool = False
    tasks: dict[str, float] = field(default_factory=lambda: {"asr": 1.0})
    max_steps: int = 1000
    max_seconds: float = 0.0
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    batch_seconds: float = 300.0  # speech: padded audio seconds per batch
    batch_tokens: int = 16384  # text: padded tokens per batch
    # text stages: share of sentences turned into reading exercises (speechkit.training.batches.text_batch):
    # the ASR prompt with the sentence's own token embeddings, each repeated ``reading_stretch`` times and
    # noised, in the audio slots. A decoder trained on single sentences never learns to copy from its
    # prompt, and on synthetic speech it then memorised transcripts instead of reading the audio.
    reading_fraction: float = 0.0
    reading_stretch: int = 3
    init_feature_stats: bool = False  # set the encoder's mel mean/invstd from this stage's data first
    # weight of an auxiliary CTC loss on the encoder output of ASR rows, through a training-only linear
    # head (speechkit/training/ctc.py; never exported): a direct, monotonic signal for a from-scratch
    # encoder, which the decoder's loss alone gave too slowly (recipes/synthetic_demo/RESULTS.md)
    ctc_weight: float = 0.0
    # weight of the decoder's cross-entropy; 0 skips the decoder (an encoder-only CTC stage)
    ce_weight: float = 1.0
    # speech stages that leave the encoder frozen: run it once over the training audio (no SpecAugment) and
    # train on its cached outputs, so a step costs the projector and decoder only. The decoder needs
    # thousands of updates before it reads the audio (session 4's probe: ~4,000), which the full step did
    # not give in the time (recipes/synthetic_demo/RESULTS.md)
    cache_encoder: bool = False
    # cached stages: zero up to ``audio_time_width`` consecutive encoder tokens (80 ms each) at
    # ``audio_time_masks`` random places in every clip, drawn anew each step (SpecAugment cannot reach a cache
    # built once; run 12's decoder fitted its training clips to 0.02 nats/token)
    audio_time_masks: int = 0
    audio_time_width: int = 5
    eval_every: int = 0  # dev evaluation every N steps (and at the stage end); 0: stage end only
    save_every: int = 0  # checkpoint every N steps (and at the stage end); 0: stage end only

    def __post_init__(self) -> None:
        if self.data not in ("text", "speech"):
            raise ConfigError(f"stage {self.name}: data={self.data!r}, choose 'text' or 'speech'")
        bad = [g for g in self.trainable if g not in TRAINABLE_GROUPS]
        if bad or not self.trainable:
            raise ConfigError(f"stage {self.name}: trainable={list(self.trainable)}; groups: {TRAINABLE_GROUPS}")
        if "lora" in self.trainable and not self.lora:
            raise ConfigError(f"stage {self.name}: trains 'lora' but has lora: false (it would get no gradient)")
        bad_tasks = [t for t in self.tasks if t not in TASK_NAMES]
        if bad_tasks or not self.tasks or min(self.tasks.values()) < 0 or sum(self.tasks.values()) <= 0:
            raise ConfigError(f"stage {self.name}: tasks={self.tasks}; names {TASK_NAMES}, weights >= 0")
        if self.ctc_weight < 0 or (self.ctc_weight and self.data != "speech"):
            raise ConfigError(f"stage {self.name}: ctc_weight={self.ctc_weight} needs >= 0 and a speech stage")
        if not 0 <= self.reading_fraction <= 1 or (self.reading_fraction and self.data != "text"):
            raise ConfigError(f"stage {self.name}: reading_fraction={self.reading_fraction} needs 0..1, text data")
        if self.reading_stretch < 1:
            raise ConfigError(f"stage {self.name}: reading_stretch={self.reading_stretch} must be at least 1")
        if self.ce_weight < 0 or (self.ce_weight == 0 and not self.ctc_weight):
            raise ConfigError(f"stage {self.name}: ce_weight={self.ce_weight} needs >= 0, and ctc_weight > 0 if 0")
        if self.cache_encoder and (self.data != "speech" or "encoder" in self.trainable or self.ctc_weight):
            raise ConfigError(f"stage {self.name}: cache_encoder needs a speech stage that does not train the "
                              "encoder and has ctc_weight 0")  # fmt: skip
        uncached = self.audio_time_masks and not self.cache_encoder
        if self.audio_time_masks < 0 or self.audio_time_width < 1 or uncached:
            raise ConfigError(f"stage {self.name}: audio_time_masks={self.audio_time_masks} (>= 0) and "
                              f"audio_time_width={self.audio_time_width} (>= 1) are for cache_encoder "
                              "stages")  # fmt: skip
        if self.max_steps < 1 or self.warmup_steps < 0 or self.lr <= 0 or self.max_seconds < 0:
            raise ConfigError(
                f"stage {self.name}: max_steps={self.max_steps}, warmup_steps={self.warmup_steps}, "
                f"lr={self.lr}, max_seconds={self.max_seconds} out of range"
            )


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section: global settings and the ordered stages."""

    stages: tuple[StageConfig, ...]
    seed: int = 0
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast dtype; master weights stay fp32
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    log_every: int = 10
    num_workers: int = 0  # data-loading processes (0: in the training process)
    # decode each speech manifest's audio once into memory (int16; 72 h = 8.3 GB) instead of every epoch
    audio_in_memory: bool = False
    # compute log-mel features on the training device instead of in the loading processes
    features_on_device: bool = False
    dev_per_lang: int = 50  # dev utterances per language in periodic evaluation
    save_dtype: Literal["bfloat16", "float32"] = "bfloat16"  # official-layout weights
    shard_mb: int = 16  # official-layout shard size limit
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    # labels of the training-only CTC head (speechkit/training/ctc.py): "tokens" (the tokenizer's ids of
    # the transcript), "chars" (characters of the reading: kana for Japanese, pinyin for Mandarin) or
    # "phonemes" (espeak-ng's IPA of what was said, the manifests' ``phonemes``); ``ctc_upsample`` labels per
    # 80 ms encoder token
    ctc_units: Literal["tokens", "chars", "phonemes"] = "tokens"
    ctc_upsample: int = 1
    # up to this many seconds of silence before and after each training clip (fixed per clip): espeak-ng's
    # clips start and end tight, and run 11's model (trained without it) lost the first words of most clips
    # given ~0.2 s more; run 12's (0.5 s) keeps them after 1 s
    edge_silence_s: float = 0.0
    # stages on cached encoder outputs, on a CUDA device: replay each step from a CUDA graph per padded
    # batch shape (speechkit/training/graphs.py); the eager step is host-bound there
    cuda_graphs: bool = False
    # stages that train the encoder alone (CTC), on a CUDA device: the encoder's forward and backward from
    # CUDA graphs (graphs.GraphedEncoder), the rest of the step eager
    cuda_graphs_encoder: bool = False

    def __post_init__(self) -> None:
        if self.ctc_units not in ("tokens", "chars", "phonemes") or self.ctc_upsample < 1:
            raise ConfigError(f"train.ctc_units={self.ctc_units!r}, ctc_upsample={self.ctc_upsample}: "
                              "choose tokens, chars or phonemes, and an upsampling of at least 1")  # fmt: skip
        if not self.stages:
            raise ConfigError("train.stages: at least one stage is needed")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"train.stages: names must be unique, got {names}")
        if self.edge_silence_s < 0:
            raise ConfigError(f"train.edge_silence_s={self.edge_silence_s}: must be >= 0 seconds")
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"train.precision={self.precision!r}: choose bf16 or fp32")


@dataclass(frozen=True)
class RecipeTrainConfig:
    """What a training run reads from the recipe file: ``model`` (None when fine-tuning) and ``train``."""

    model: ModelSpec | None
    train: TrainConfig


def from_dict(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a parsed mapping, recursively; unknown keys are ConfigErrors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where}: {err}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_convert(item or args[i], v, f"{where}.{i}") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): float(v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType) or origin is Literal:
        return value
    if hint is float:
        # YAML 1.1 reads a number without a dot ("3e-4", also as a key=value override) as a string
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.0.c=value`` items (value parsed as YAML) in a copy of ``raw``; the path must exist."""
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.seed=1)")
        parts = key.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key}: {part!r} is not an index of a {len(node)}-item list")
                part = int(part)
            elif not isinstance(node, dict) or (part not in node and not last):
                raise ConfigError(f"override {key}: no key {part!r} here")
            if last:
                node[part] = yaml.safe_load(text)
            else:
                node = node[part]
    return out


def read_yaml(path: Path) -> dict:
    """A recipe file's top-level mapping; a missing file, bad YAML or a non-mapping is a one-line ConfigError."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading the recipe config needs PyYAML: pip install 'speechkit[train]'") from None
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_train_config(path: str | Path, overrides: list[str] = ()) -> RecipeTrainConfig:
    """Parse the ``model`` and ``train`` sections of a recipe file, after applying ``overrides``."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), list(overrides))
    if "train" not in raw:
        raise ConfigError(f"{path}: no 'train' section")
    model = from_dict(ModelSpec, raw["model"], "model") if raw.get("model") is not None else None
    return RecipeTrainConfig(model, from_dict(TrainConfig, raw["train"], "train"))


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain JSON-able data (tuples become lists), for checkpoints that describe themselves."""
    return dataclasses.asdict(config)
