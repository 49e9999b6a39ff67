"""Data-parallel transcription under torchrun (two CPU processes, gloo) equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from speechkit.inference.distributed import shard_by_length
from speechkit.testing.audio import speechlike, write_audio

ROOT = Path(__file__).resolve().parents[1]


def test_shards_balance_total_duration():
    durations = [30.0, 1.0, 29.0, 2.0, 15.0, 14.0, 0.5]
    shards = shard_by_length(durations, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(durations)))
    loads = [sum(durations[i] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= 1.5
    assert shard_by_length(durations, 1) == [list(range(len(durations)))]


def test_torchrun_two_processes_equal_one(tiny_checkpoint, tmp_path):
    files = [str(write_audio(tmp_path / f"clip{i}.flac", speechlike(d, seed=i), 16000))
             for i, d in enumerate([3.0, 1.0, 2.5, 1.5, 2.0])]  # fmt: skip
    files.insert(2, str(tmp_path / "missing.flac"))
    args = ["transcribe", *files, "--model", str(tiny_checkpoint), "--format", "json", "--max-new-tokens", "6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "speechkit.cli", *args], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "speechkit.cli", *args]  # fmt: skip
    double = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 1 and double.returncode != 0  # the missing file fails in both
    one = [json.loads(line) for line in single.stdout.splitlines()]
    two = [json.loads(line) for line in double.stdout.splitlines()]
    assert [r["file"] for r in two] == [f for f in files if "missing" not in f]
    assert [(r["file"], r["tokens"]) for r in two] == [(r["file"], r["tokens"]) for r in one]
    assert "missing.flac" in double.stderr
