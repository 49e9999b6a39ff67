"""``eval/bench/finetune_gpu.py --tiny`` on CPU: one process, then ``torchrun --nproc_per_node 2`` (gloo)
against the first run's JSON, as the GPU acceptance runs it on one and two GPUs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval/bench/finetune_gpu.py"
_SPEC = importlib.util.spec_from_file_location("finetune_gpu", SCRIPT)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["finetune_gpu"] = bench  # its dataclasses look their module up there
_SPEC.loader.exec_module(bench)

STEPS, WARMUP = 5, 3


def _run(prefix: list[str], out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [*prefix, str(SCRIPT), "--tiny", "--out", str(out), "--steps", str(STEPS), "--warmup", str(WARMUP), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    return out, _run([sys.executable], out)


def test_tiny_one_process(single):
    out, printed = single
    one = json.loads((out / "finetune-tiny-world1.json").read_text())
    assert printed.strip() == one["summary"] == (out / "finetune-tiny-world1.txt").read_text().strip()
    assert (one["world"], one["per_gpu_batch"], one["clip_s"], one["lora_rank"], one["precision"]) == (
        1, 2, 4.0, 8, "fp32")  # fmt: skip
    assert len(one["step_s"]) == len(one["losses"]) == STEPS and all(map(math.isfinite, one["losses"]))
    assert one["step_mean_s"] == pytest.approx(sum(one["step_s"][WARMUP:]) / (STEPS - WARMUP), abs=1e-3)
    assert one["audio_s_per_s"] == pytest.approx(2 * 4.0 / one["step_mean_s"], rel=1e-2)
    assert one["trained_params_moved"] and one["answer_tokens"] >= 20 and "peak_allocated_gb" not in one


@pytest.mark.slow  # two more interpreters under torchrun: ~10-20 s on 2 busy cores
def test_tiny_two_processes_report_scaling(single):
    out, _ = single
    one = json.loads((out / "finetune-tiny-world1.json").read_text())
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], out,
         "--single", str(out / "finetune-tiny-world1.json"))  # fmt: skip
    two = json.loads((out / "finetune-tiny-world2.json").read_text())
    assert two["world"] == 2 and two["ranks_in_sync"]  # DDP averaged the gradients: identical masters
    assert two["audio_s_per_s"] == pytest.approx(2 * 2 * 4.0 / two["step_mean_s"], rel=1e-2)
    assert two["scaling"] == pytest.approx(two["audio_s_per_s"] / one["audio_s_per_s"], rel=1e-2)
    assert two["scaling_efficiency"] == pytest.approx(two["scaling"] / 2, abs=1e-3)
    assert "x vs 1 process" in two["summary"]


def test_scaling_baseline_must_be_one_process_of_the_same_shape(tmp_path):
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"world": 2, "per_gpu_batch": 2, "clip_s": 4.0, "model": bench._model_name(True)}))
    with pytest.raises(SystemExit, match=r"two.json: \(world, batch, clip_s, model\) = \(2, 2, 4.0, .*expected \(1, "):
        bench._read_single(path, bench.Shape(2, 4.0, 20), tiny=True)
