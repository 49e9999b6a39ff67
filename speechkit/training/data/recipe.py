"""The data half of a synthetic-speech recipe: read its config, run prepare (corpus + tokenizer), synthesize.

The recipe's ``config.yaml`` holds a ``data`` and a ``tokenizer`` section (other top-level sections
belong to training and are not read here); unknown keys inside these sections are errors.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from speechkit.errors import ConfigError
from speechkit.training.config import read_yaml
from speechkit.training.data.config import DataConfig
from speechkit.training.data.prepare import prepare
from speechkit.training.data.split import SPLITS
from speechkit.training.data.synthesize import Espeak, SynthesisReport, synthesize_manifest
from speechkit.training.data.tokenizer import TokenizerConfig, train_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeDataConfig:
    """The ``data`` and ``tokenizer`` sections of a recipe config."""

    data: DataConfig
    tokenizer: TokenizerConfig


def load_recipe_config(path: str | Path) -> RecipeDataConfig:
    """Parse ``path``; a missing file, bad YAML or bad value is a one-line ConfigError."""
    path = Path(path)
    raw = read_yaml(path)
    sections = {}
    for name in ("data", "tokenizer"):
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: '{name}' must be a mapping")
        sections[name] = section
    return RecipeDataConfig(DataConfig.from_dict(sections["data"]), TokenizerConfig.from_dict(sections["tokenizer"]))


def prepare_recipe(cfg: RecipeDataConfig, out: Path, cache: Path, workers: int = 2) -> Path:
    """Manifests into ``out`` (see :func:`prepare`) and the tokenizer, trained on the train split's
    natural transcripts and translations only (not the spliced ones), into ``out/tokenizer``. Returns ``out``."""
    manifests = prepare(cfg.data, out, cache, workers)
    texts = []
    with manifests["train"].open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["translation"] is not None:
                texts += [row["text"], row["translation"]]
    train_tokenizer(texts, out / "tokenizer", cfg.tokenizer.vocab_size, cfg.tokenizer.special_ids)
    return out


def synthesize_splits(
    prepared: Path, out: Path, espeak: Espeak, workers: int, splits: tuple[str, ...] = SPLITS,
    audio_format: str = "flac",
) -> dict[str, SynthesisReport]:
    """Synthesize the prepared manifests of ``splits`` into ``out`` (``audio_format`` files + manifests with
    durations)."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
    out.mkdir(parents=True, exist_ok=True)
    if (prepared / "NOTICE").is_file():  # the manifests carry the text: its licence notices go with them
        shutil.copyfile(prepared / "NOTICE", out / "NOTICE")
        shutil.copytree(prepared / "licenses", out / "licenses", dirs_exist_ok=True)
    reports = {}
    for split in splits:
        report = synthesize_manifest(prepared / f"{split}.jsonl", out, espeak, workers, audio_format)
        log.info("%s: %d utterances (%d failed), %.2f h of audio in %.0f s: %.0fx real time, %.0fx per worker",
                 split, report.written, report.failed, report.audio_s / 3600, report.wall_s,
                 report.audio_s / report.wall_s, report.audio_s / report.wall_s / workers)  # fmt: skip
        reports[split] = report
    return reports
