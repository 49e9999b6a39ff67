"""The fine-tuning recipe under ``torchrun --nproc_per_node 2`` on CPU (gloo): stops, resumes, exports once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike, write_audio

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(tiny_checkpoint, tmp_path):
    rows = []
    for i, dur in enumerate([1.0, 1.3, 0.9, 1.2]):
        write_audio(tmp_path / f"a{i}.wav", speechlike(dur, seed=i))
        rows.append({"id": f"u{i}", "audio_filepath": f"a{i}.wav", "text": f"hello number {i}", "src_lang": "en"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "recipes/finetune_lora/finetune.py"), "--model", str(tiny_checkpoint), "--train", str(manifest),
           "--dev", str(manifest), "--out", str(out), "finetune.stage.max_steps=2", "finetune.stage.batch_seconds=1.6",
           "finetune.stage.eval_every=2", "finetune.stage.warmup_steps=0", "finetune.dev_rows=2",
           "finetune.precision=fp32"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([*cmd, "--stop-at-step", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 0, killed.stderr[-2000:]
    assert not (out / "model").exists()  # stopped as a kill after the step-1 save: no export yet
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # the same command resumes
    assert done.returncode == 0, done.stderr[-2000:]
    history = [json.loads(line) for line in (out / "run/history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 2] and "dev_wer" in history[-1]  # rank 0 alone writes
    assert sorted(p.name for p in (out / "run/checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    tuned = load_speech_model(out / "model", dtype=torch.float32, lora="unmerged").model.state_dict()
    base = load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="unmerged").model.state_dict()
    key = "decoder.layers.0.self_attn.qkv_proj.lora_a"
    assert not torch.equal(tuned[key], base[key])
    assert torch.equal(tuned["audio.encoder.embed.out.weight"], base["audio.encoder.embed.out.weight"])
    assert (out / "model/speech-lora/adapter_config.json").is_file()
