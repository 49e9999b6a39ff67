"""Data-parallel transcription: one GPU against ``torchrun`` on several, the same file list, one run.

    python eval/bench/multi_gpu.py --work DIR [--files 2048] [--gpus 2] [--out result.json]
    python eval/bench/multi_gpu.py --work DIR --tiny --files 8 --gpus 2   # CPU check of the script

Writes a random full-size checkpoint in the official layout (``--tiny``: the test config) and
``--files`` synthetic clips of 5-30 s (seeded) under ``--work``, then times the installed command
end to end, as a user runs it: ``speechkit transcribe FILES --format json`` on one GPU, and
``torchrun --nproc_per_node G -m speechkit.cli transcribe FILES`` on G. Each is also timed on one
file, which is its fixed cost (interpreter, model load, first capture), so the result gives both the
whole-command speed-up and the speed-up of the decoding itself ((wall - fixed) ratio). The
multi-GPU output must list every file once, in input order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _prepare(work: Path, files: int, tiny: bool) -> tuple[Path, list[str], float]:
    """The checkpoint and the clips (reused when present); their total duration in seconds."""
    import torch

    from speechkit.testing.checkpoint import released_config, tiny_config, write_random_checkpoint

    model = work / "model"
    if not (model / "model.safetensors.index.json").exists():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = tiny_config() if tiny else released_config()
        write_random_checkpoint(model, cfg, shard_bytes=0 if tiny else 5 * 10**9, device=device)
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    durations = np.random.default_rng(0).uniform(5.0, 30.0, files)
    paths = [str(clips / f"clip-{i:05d}.flac") for i in range(files)]
    missing = [i for i, path in enumerate(paths) if not Path(path).exists()]
    with ProcessPoolExecutor() as pool:  # ~0.1 s a clip in one process
        list(pool.map(_write_clip, [paths[i] for i in missing], [float(durations[i]) for i in missing], missing))
    return model, paths, float(durations.sum())


def _write_clip(path: str, seconds: float, seed: int) -> None:
    from speechkit.testing.audio import speechlike, write_audio

    write_audio(path, speechlike(seconds, seed=seed))


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, list[str]]:
    """Wall seconds of ``command`` and its stdout lines; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{done.stderr[-8000:]}")
    return wall, done.stdout.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="checkpoint and clips go here (reused)")
    parser.add_argument("--files", type=int, default=2048)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--group-batches", type=int, default=1, help="the command's --group-batches")
    parser.add_argument("--tiny", action="store_true", help="tiny fp32 model on CPU (checks the script)")
    parser.add_argument("--out", type=Path, help="also write the result JSON here")
    args = parser.parse_args()

    model, paths, audio_s = _prepare(args.work, args.files, args.tiny)
    # --vad webrtc: the synthetic clips are tonal, which the default music filter would drop
    options = ["transcribe", "--model", str(model), "--format", "json", "--batch-size", str(args.batch_size),
               "--group-batches", str(args.group_batches),
               "--vad", "webrtc", "--device", "cpu" if args.tiny else "cuda"]  # fmt: skip
    single = [sys.executable, "-m", "speechkit.cli", *options]
    multi = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.gpus), "-m", "speechkit.cli",
             *options]  # fmt: skip
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "0"}
    all_gpus = os.environ | {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(args.gpus)))}
    result: dict = {"files": len(paths), "audio_s": round(audio_s, 1), "gpus": args.gpus,
                    "group_batches": args.group_batches}  # fmt: skip
    if not args.tiny:
        import torch

        result["device"] = torch.cuda.get_device_name()
    for name, command, command_env in (("one_gpu", single, env), ("torchrun", multi, all_gpus)):
        fixed, _ = _timed(command + paths[:1], command_env)
        wall, lines = _timed(command + paths, command_env)
        if name == "torchrun":
            listed = [json.loads(line)["file"] for line in lines]
            if listed != paths:
                sys.exit(f"torchrun output lists {len(listed)} files, not the {len(paths)} inputs in order")
        result[name] = {"wall_s": round(wall, 2), "fixed_s": round(fixed, 2),
                        "rtfx": round(audio_s / wall, 1),
                        "decode_rtfx": round(audio_s / (wall - fixed), 1) if wall > fixed else None}  # fmt: skip
        _write(result, args.out)  # what is measured so far: a run cut by the device's clock keeps it
    result["speedup"] = round(result["one_gpu"]["wall_s"] / result["torchrun"]["wall_s"], 2)
    one, many = result["one_gpu"]["decode_rtfx"], result["torchrun"]["decode_rtfx"]
    result["decode_speedup"] = round(many / one, 2) if one and many else None  # too few files: no decoding time
    _write(result, args.out)


def _write(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
