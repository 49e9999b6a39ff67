"""Shared fixtures: one tiny official-layout checkpoint per test session, the demo model's held-out clips, and
(from training_helpers) the tiny training corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechkit.testing.checkpoint import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["training_helpers", "decoding_helpers"]  # `corpus` (training tests), `loaded` (decoding)


@pytest.fixture(scope="session")
def demo_sentences() -> list[tuple[Path, str]]:
    """Held-out utterances of the packaged demo model that it transcribes correctly alone, as (flac, text):
    the README's example, then ``tests/data/demo_heldout`` (es, fr, pt)."""
    example = json.loads((ROOT / "examples" / "demo_example.json").read_text("utf-8"))
    folder = ROOT / "tests" / "data" / "demo_heldout"
    clips = json.loads((folder / "clips.json").read_text("utf-8"))
    return [(ROOT / "examples" / example["audio"], example["text"])] + [(folder / c["audio"], c["text"]) for c in clips]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny checkpoint in the official layout (bf16 shards, index, configs, tokenizer)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "phi4mm-tiny", seed=0)


@pytest.fixture(autouse=True)
def _deterministic_fp32():
    # parity tolerances assume true fp32 matmuls
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
