"""Shared fixtures: one tiny official-layout checkpoint per test session."""

from __future__ import annotations

import pytest
import torch

from speechkit.testing.checkpoint import write_random_checkpoint


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
