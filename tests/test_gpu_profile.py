"""``eval/bench/gpu_profile.py --tiny`` on CPU: the script the GPU profile runs, end to end on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval/bench/gpu_profile.py"
STEPS, PROFILE_STEPS, TOP = 4, 2, 5


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("profile")
    done = _run(out, "--tiny", "--steps", str(STEPS), "--profile-steps", str(PROFILE_STEPS), "--top", str(TOP))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "profile.json").read_text()), (out / "profile.txt").read_text()


def test_parts_and_their_positions(report):
    data, _ = report
    assert list(data["parts"]) == ["decode_b64", "decode_b1", "ttft_b1", "encoder_b64", "request_b1"]
    assert data["parts"]["request_b1"]["new_tokens"] == 100  # its gaps between kernels: CUDA only
    assert data["parts"]["encoder_b64"]["batch"] == 64
    assert data["prompt_len"] == 1 + 375 + 8 + 2  # a 30 s clip: 3000 frames -> 375 audio tokens, plus the chat form
    for batch in (64, 1):
        part = data["parts"][f"decode_b{batch}"]
        assert part["batch"] == batch and part["kernels_from"] == "eager step"  # no graphs on CPU
        assert part["slot"] == data["prompt_len"] + (100 - STEPS) // 2  # mid-way through the 100 new tokens
        assert part["cache_slots"] == data["prompt_len"] + 100
    # tiny decoder: 2 layers x 2 (K, V) x 64 rows x 486 slots x 2 KV heads x head dim 16 x 4 bytes
    assert data["parts"]["decode_b64"]["cache_gb"] == round(2 * 2 * 64 * 486 * 2 * 16 * 4 / 1e9, 3)


def test_kernel_tables(report):
    data, text = report
    for name, part in data["parts"].items():
        top = part["top"]
        assert len(top) == TOP
        assert [r["total_us"] for r in top] == sorted((r["total_us"] for r in top), reverse=True)
        assert sum(r["total_us"] for r in top) <= 1000 * part["kernel_ms_per_pass"] + 1
        assert part["wall_ms"] > 0 and part["kernels_per_pass"] > 0
        assert f"## {name}: wall {part['wall_ms']:.3f} ms/pass" in text
        assert top[0]["name"][:110] in text
    assert "aten::mm" in {r["name"] for r in data["parts"]["decode_b1"]["top"]}  # the weight GEMMs
    assert set(data["parts"]["ttft_b1"]["stages"]) == {"features", "encoder", "prefill"}


def test_refuses_more_profiled_steps_than_timed(tmp_path):
    done = _run(tmp_path, "--tiny", "--steps", "2", "--profile-steps", "3")
    assert done.returncode == 2 and "need 1 <= --profile-steps <= --steps <= 100" in done.stderr
