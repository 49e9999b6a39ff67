"""Configuration of the demo corpus: which languages, how much text, which voices; read from a recipe's YAML.

Unknown keys are errors, so a typo in ``config.yaml`` cannot silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from speechkit.errors import ConfigError
from speechkit.training.data.clean import CleanConfig

LANGS = ("en", "de", "fr", "it", "es", "pt", "ja", "zh")

# espeak-ng 1.51 voices per language. zh is read from pinyin (Debian's 1.51 ``cmn`` voice is broken).
DEFAULT_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb", "en-gb-x-rp", "en-029"),
    "de": ("de",),
    "fr": ("fr", "fr-be"),
    "it": ("it",),
    "es": ("es", "es-419"),
    "pt": ("pt-br",),
    "ja": ("ja",),
    "zh": ("cmn-latn-pinyin",),
}
# espeak-ng voice variants ("" = the voice as it is). Gimmicks (robots, demons) are left out.
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "klatt", "klatt2", "klatt3")
HELDOUT_VARIANTS = ("m7", "f4", "klatt4")


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` section of ``recipes/synthetic_demo/config.yaml``.

    Attributes:
        langs: speechkit language codes; English must be one (every pair is English<->X).
        seed: drives the split and the voice, speed and pitch of every utterance.
        train_per_lang / dev_per_lang / test_per_lang: utterances per spoken language and split (at most).
        near_duplicate_jaccard: English sentences with word-set Jaccard >= this are one cluster.
        voices: espeak-ng voices per language; one is drawn per utterance.
        train_variants / heldout_variants: voice variants of train+dev and of test; they must not overlap.
        speed_wpm / pitch: inclusive ranges drawn from per utterance (espeak-ng ``-s`` and ``-p``).
        clean: sentence length limits.
        spliced_per_lang: extra train utterances per language joined from spans of train sentences
            (``speechkit.training.data.splice``), transcribed only; 0 for none.
    """

    langs: tuple[str, ...] = LANGS
    seed: int = 0
    train_per_lang: int = 6000
    dev_per_lang: int = 100
    test_per_lang: int = 200
    near_duplicate_jaccard: float = 0.7
    voices: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_VOICES))
    train_variants: tuple[str, ...] = TRAIN_VARIANTS
    heldout_variants: tuple[str, ...] = HELDOUT_VARIANTS
    speed_wpm: tuple[int, int] = (140, 220)
    pitch: tuple[int, int] = (30, 70)
    clean: CleanConfig = field(default_factory=CleanConfig)
    spliced_per_lang: int = 0

    def __post_init__(self) -> None:
        if "en" not in self.langs:
            raise ConfigError(f"data.langs must include 'en' (all pairs are English<->X), got {list(self.langs)}")
        unknown = [lang for lang in self.langs if lang not in LANGS]
        if unknown:
            raise ConfigError(f"data.langs: no source for {unknown}; supported: {list(LANGS)}")
        missing = [lang for lang in self.langs if not self.voices.get(lang)]
        if missing:
            raise ConfigError(f"data.voices: no voice for {missing}")
        shared = set(self.train_variants) & set(self.heldout_variants)
        if shared or not self.heldout_variants or not self.train_variants:
            raise ConfigError(f"data: train_variants and heldout_variants must be non-empty and disjoint, "
                              f"both have {sorted(shared)}")  # fmt: skip
        for name, (lo, hi) in (("speed_wpm", self.speed_wpm), ("pitch", self.pitch)):
            if not lo <= hi:
                raise ConfigError(f"data.{name}: need low <= high, got [{lo}, {hi}]")
        if min(self.train_per_lang, self.dev_per_lang, self.test_per_lang, self.spliced_per_lang) < 0:
            raise ConfigError("data: *_per_lang counts must be >= 0")
        if not 0.0 < self.near_duplicate_jaccard <= 1.0:
            raise ConfigError(f"data.near_duplicate_jaccard must be in (0, 1], got {self.near_duplicate_jaccard}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataConfig:
        """Build from a parsed YAML mapping; unknown keys and wrong shapes are ConfigErrors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"data: unknown keys {unknown}; known: {sorted(known)}")
        kwargs: dict[str, Any] = dict(raw)
        for key in ("langs", "train_variants", "heldout_variants", "speed_wpm", "pitch"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "voices" in kwargs:
            kwargs["voices"] = {lang: tuple(v) for lang, v in kwargs["voices"].items()}
        if "clean" in kwargs:
            clean_keys = {f.name for f in fields(CleanConfig)}
            bad = sorted(set(kwargs["clean"]) - clean_keys)
            if bad:
                raise ConfigError(f"data.clean: unknown keys {bad}; known: {sorted(clean_keys)}")
            try:
                kwargs["clean"] = CleanConfig(**kwargs["clean"])
            except ValueError as err:
                raise ConfigError(f"data.clean: {err}") from None
        return cls(**kwargs)
