"""Peak resident memory of ``speechkit transcribe`` on a multi-hour file, beyond the loaded model.

Writes a long 16 kHz FLAC (silence with a speech clip every few minutes: the jfk clip and
espeak-ng sentences in turn), streamed to disk a minute at a time, and a tiny random checkpoint in
the official layout, then runs ``speechkit transcribe FILE --model CKPT --format json`` in a child
process and prints:

- rss_after_load: VmRSS of that process right after ``Pipeline.load`` returns (the model resident);
- vmhwm: the process's peak resident set (kernel ``ru_maxrss``, i.e. VmHWM at exit);
- beyond_model: their difference (target < 2 GB on a 2-hour file).

The child is ``speechkit.cli.main`` with ``Pipeline.load`` wrapped to report VmRSS when it returns;
nothing else differs from the installed command.

    python eval/bench/longform_memory.py [--hours 2] [--every-min 3] [--workdir /tmp/speechkit-longform]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.testing.audio import jfk_path
from speechkit.testing.checkpoint import write_random_checkpoint
from speechkit.testing.corpora import clip

MARK = "longform_memory: rss_after_load_kb="

CHILD = f"""
import sys
from speechkit.inference.pipeline import Pipeline
load = Pipeline.load.__func__

def reporting_load(cls, *args, **kwargs):
    pipeline = load(cls, *args, **kwargs)
    rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1]
    print("{MARK}" + rss, file=sys.stderr, flush=True)
    return pipeline

Pipeline.load = classmethod(reporting_load)
from speechkit.cli import main
sys.argv = ["speechkit"] + sys.argv[1:]
sys.exit(main())
"""


def write_long_flac(path: Path, hours: float, every_min: float) -> int:
    """Silence with a speech clip at the start of every ``every_min`` minutes; returns the clip count."""
    clips = [load_audio(jfk_path()).samples, clip(0, "The meeting will continue after a short break.", "en"),
             clip(1, "Wir sehen uns nach der Pause wieder.", "de")]  # fmt: skip
    block = round(every_min * 60 * SAMPLE_RATE)
    n_blocks = round(hours * 60 / every_min)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for i in range(n_blocks):
            speech = clips[i % len(clips)]
            lead = SAMPLE_RATE * 5  # 5 s of silence before each clip
            f.write(np.zeros(lead, dtype=np.float32))
            f.write(speech)
            rest = block - lead - len(speech)
            for start in range(0, rest, 60 * SAMPLE_RATE):  # a minute of zeros at a time
                f.write(np.zeros(min(60 * SAMPLE_RATE, rest - start), dtype=np.float32))
    return n_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--every-min", type=float, default=3.0, help="minutes between speech clips")
    parser.add_argument("--workdir", default="/tmp/speechkit-longform")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    audio = work / f"long_{args.hours:g}h.flac"
    t0 = time.perf_counter()
    n_clips = write_long_flac(audio, args.hours, args.every_min)
    ckpt = write_random_checkpoint(work / "tiny-ckpt")
    info = sf.info(audio)
    print(f"file: {audio} {info.duration / 3600:.2f} h, {n_clips} speech clips, "
          f"{audio.stat().st_size / 1e6:.0f} MB FLAC (written in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")

    cmd = [sys.executable, "-c", CHILD, "transcribe", str(audio), "--model", str(ckpt), "--format", "json"]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - t0
    peak_kb = _children_peak_kb()
    if child.returncode != 0:
        sys.exit(f"speechkit transcribe failed ({child.returncode}):\n{stderr[-3000:]}")
    after_load_kb = int(next(line for line in stderr.splitlines() if line.startswith(MARK))[len(MARK):])
    segments = sum(len(json.loads(line)["segments"]) for line in stdout.splitlines() if line.strip())
    print(f"transcribe: {seconds:.0f} s wall, {segments} decoded segments in the JSON")
    print(f"rss_after_load: {after_load_kb / 1024:.0f} MiB")
    print(f"vmhwm:          {peak_kb / 1024:.0f} MiB")
    print(f"beyond_model:   {(peak_kb - after_load_kb) / 1024:.0f} MiB (target < 2048 MiB)")


def _children_peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux: the largest child's VmHWM


if __name__ == "__main__":
    main()
