"""Full-size load time and peak resident memory of ``load_speech_model`` (run on the GPU machine).

    python eval/bench/load.py --write /tmp/phi4mm-random   # once: a random full-size official-layout checkpoint
    python eval/bench/load.py --load /tmp/phi4mm-random [--device cuda] [--lora merged]

``--load`` drops the page cache first when it may (root on Linux), loads in a fresh process and
prints one JSON line: load seconds, peak resident memory (VmHWM), the loaded model's bytes and
their ratio. The random checkpoint has the released shapes except the vision tower (a stub),
so its files are smaller than the release; speechkit never reads the vision tower anyway.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _load(root: str, device: str, lora: str) -> None:
    import torch

    from speechkit.model.loader import load_speech_model

    start = time.perf_counter()
    loaded = load_speech_model(root, device=device, dtype=torch.bfloat16, lora=lora)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model_bytes = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
    peak = vm_hwm_bytes()
    gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    print(
        json.dumps(
            {
                "load_seconds": round(seconds, 2),
                "vm_hwm_gb": round(peak / 1e9, 2),
                "model_gb": round(model_bytes / 1e9, 2),
                "peak_over_model": round(peak / model_bytes, 3),
                "gpu_peak_gb": round(gpu / 1e9, 2),
                "device": device,
                "lora": lora,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="DIR")
    parser.add_argument("--load", metavar="DIR")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lora", default="merged", choices=["merged", "unmerged"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        import torch

        from speechkit.testing.checkpoint import released_config, write_random_checkpoint

        start = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        write_random_checkpoint(args.write, released_config(), shard_bytes=5 * 10**9, device=device)
        print(f"wrote {args.write} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.load and args.child:
        _load(args.load, args.device, args.lora)
    elif args.load:
        dropped = _drop_page_cache()
        print(f"page cache dropped: {dropped}", file=sys.stderr)
        cmd = [sys.executable, __file__, "--load", args.load, "--device", args.device, "--lora", args.lora, "--child"]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
