"""Bounded load test against a local ``speechkit serve``: N concurrent real-time streams for T seconds.

    python streaming/loadtest.py FILE --streams 32 --seconds 60 --serve tiny
    python streaming/loadtest.py FILE --streams 16 32 64 --seconds 30 --serve full --min-chunk 0.25 --pause 0.3
    python streaming/loadtest.py FILE --streams 32 --seconds 60 --url ws://127.0.0.1:8000/v1/stream

Loopback only (refuses other hosts). ``--serve`` starts ``speechkit serve`` itself on a free loopback port
with a random checkpoint that always talks (``write_talking_checkpoint``: junk text, but never the empty
text after which the engine sends no final): ``tiny`` (the test config, fp32 on the CPU) or ``full`` (the
released shapes, bf16 on the GPU, about 8 GB written to a temporary folder first). Every decode is forced to
``--max-new-tokens`` tokens, ``--max-batch`` requests share a batch, and ``--min-chunk``/``--pause`` set the
engine; the server stops at the end. Each stream replays FILE in 100 ms pcm16 frames at real-time pace,
looping until T, then sends ``end``. Several ``--streams`` counts run one after another against the same
server.

Checks every stream's segments: ids 0, 1, 2... each finalized once (a gap is a lost segment, a repeat a
duplicated one), every segment that had a partial was finalized, final times do not overlap, the stream
ended with ``done`` and no error. Prints one JSON line per streams count with those counts, the p50/p95
finalization delay (wall time from sending the frame holding a segment's last audio to receiving its
final; it includes the ``--pause`` of silence the detector waits for and up to ``--min-chunk`` until the
next re-decode) and the server's batching totals (cumulative over the runs). Exits 1 when any stream had
a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np
import websockets

from speechkit.audio import SAMPLE_RATE, load_audio

FRAME_S = 0.1
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OVERLAP_TOLERANCE_S = 0.01  # segment times are rounded to ms


@dataclass
class StreamLog:
    """What one stream received."""

    finals: list[dict] = field(default_factory=list)
    partial_ids: set[int] = field(default_factory=set)
    delays: list[float] = field(default_factory=list)  # seconds, one per final
    done: bool = False
    error: str | None = None


def segment_problems(log: StreamLog) -> list[str]:
    """Lost or duplicated segments, overlapping finals, a missing ``done`` or an error, as sentences."""
    problems = [f"error: {log.error}"] if log.error else []
    if not log.done:
        problems.append("the stream ended without done")
    ids = [m["segment_id"] for m in log.finals]
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            problems.append(f"segment {i} finalized twice")
        seen.add(i)
    problems += [f"segment {i} lost" for i in sorted(set(range(max(ids, default=-1) + 1)) - seen)]
    problems += [f"segment {i} had partials but no final" for i in sorted(log.partial_ids - seen)]
    for a, b in zip(log.finals, log.finals[1:], strict=False):
        if b["start"] < a["end"] - OVERLAP_TOLERANCE_S:
            problems.append(f"segment {b['segment_id']} ({b['start']} s) overlaps segment {a['segment_id']} "
                            f"(ends {a['end']} s)")  # fmt: skip
    return problems


async def one_stream(url: str, pcm: np.ndarray, seconds: float, key: str | None) -> StreamLog:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    sent_s: list[float] = []  # stream seconds sent so far, after each frame
    sent_wall: list[float] = []  # wall time of that frame
    log = StreamLog()
    async with websockets.connect(url, additional_headers=headers, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "format": "pcm16"}))
        ready = json.loads(await ws.recv())
        if ready["type"] != "ready":
            log.error = ready.get("message", str(ready))
            return log

        async def send():
            frame, t0, i = round(FRAME_S * SAMPLE_RATE), time.monotonic(), 0
            while (i + 1) * FRAME_S <= seconds:
                start = (i * frame) % max(len(pcm) - frame, 1)
                await ws.send(pcm[start : start + frame].tobytes())
                i += 1
                sent_s.append(i * FRAME_S)
                sent_wall.append(time.monotonic())
                await asyncio.sleep(max(t0 + i * FRAME_S - time.monotonic(), 0))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "partial":
                    log.partial_ids.add(msg["segment_id"])
                elif msg["type"] == "final":
                    log.finals.append(msg)
                    i = bisect_left(sent_s, msg["end"] - 1e-6)
                    if i < len(sent_wall):
                        log.delays.append(time.monotonic() - sent_wall[i])
                elif msg["type"] == "done":
                    log.done = True
                    break
                elif msg["type"] == "error":
                    log.error = f"{msg['code']}: {msg['message']}"
                    break
        except websockets.ConnectionClosed as closed:
            log.error = f"connection closed: {closed}"
        if log.done:
            await sender
        else:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await sender
    return log


def server_batches(url: str) -> dict:
    """The server's dynamic batching totals from ``/metrics``: batches, mean size, model seconds."""
    parts = urlparse(url)
    with urlopen(f"http://{parts.netloc}/metrics", timeout=10) as response:  # noqa: S310  # loopback only
        text = response.read().decode()
    value = {name: float(v) for name, v in re.findall(r"^(speechkit_batch_\w+_(?:sum|count)) (\S+)$", text, re.M)}
    batches = value.get("speechkit_batch_size_count", 0.0)
    return {
        "batches": int(batches),
        "mean_batch_size": round(value["speechkit_batch_size_sum"] / batches, 2) if batches else None,
        "model_seconds": round(value.get("speechkit_batch_seconds_sum", 0.0), 1),
    }


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


async def run(args, url: str, streams: int) -> dict:
    wave = load_audio(args.file, keep_8k=False)
    pcm = (np.clip(wave.samples, -1, 1) * 32767).astype("<i2")
    load_before = os.getloadavg()
    started = time.monotonic()
    logs = await asyncio.gather(*(one_stream(url, pcm, args.seconds, args.api_key) for _ in range(streams)))
    wall = time.monotonic() - started
    problems = [(n, p) for n, log in enumerate(logs) for p in segment_problems(log)]
    delays = [d for log in logs for d in log.delays]
    return {
        "streams": streams, "seconds": args.seconds, "wall_s": round(wall, 1),
        "finals": sum(len(log.finals) for log in logs),
        "lost_segments": sum("lost" in p or "no final" in p for _, p in problems),
        "duplicated_segments": sum("twice" in p or "overlaps" in p for _, p in problems),
        "streams_with_problems": len({n for n, _ in problems}),
        "problems": [f"stream {n}: {p}" for n, p in problems[:20]],
        "finalization_delay_p50_s": _percentile(delays, 50),
        "finalization_delay_p95_s": _percentile(delays, 95),
        "finalization_delay_max_s": round(max(delays), 3) if delays else None,
        "server": server_batches(url),  # model_seconds near wall_s: the model never waited for work
        "cpus": os.cpu_count(), "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip


@contextlib.contextmanager
def served(size: str, args: argparse.Namespace):
    """``speechkit serve`` of a talking random checkpoint (``size``: tiny or full) on a free loopback port;
    yields its stream URL."""
    from speechkit.testing.checkpoint import released_config, write_talking_checkpoint

    full = size == "full"
    with tempfile.TemporaryDirectory(prefix="speechkit-loadtest-") as tmp:
        model = write_talking_checkpoint(Path(tmp) / "talking", released_config() if full else None, seed=0,
                                         shard_bytes=2 << 30 if full else 0, device="cuda" if full else "cpu")
        log = Path(tmp) / "serve.log"
        device = ["--device", "cuda", "--dtype", "bfloat16"] if full else ["--device", "cpu", "--dtype", "float32"]
        cmd = [sys.executable, "-m", "speechkit.cli", "serve", "--model", str(model), "--port", "0", *device,
               "--max-streams", str(max(args.streams)), "--max-batch", str(args.max_batch),
               "--max-new-tokens", str(args.max_new_tokens), "--min-chunk", str(args.min_chunk),
               "--pause", str(args.pause)]  # fmt: skip
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (found := re.search(r"running on http://127\.0\.0\.1:(\d+)", log.read_text())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"loadtest.py: speechkit serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield f"ws://127.0.0.1:{found.group(1)}/v1/stream"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if args.server_log is not None:
                args.server_log.write_text(log.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    p.add_argument("--serve", choices=("tiny", "full"), help="start and stop a server of this model (ignores --url)")
    p.add_argument("--max-batch", type=int, default=32, help="--serve: requests per model batch")
    p.add_argument("--max-new-tokens", type=int, default=8, help="--serve: tokens every decode emits")
    p.add_argument("--min-chunk", type=float, default=1.0, help="--serve: new audio (s) that triggers a re-decode")
    p.add_argument("--pause", type=float, default=0.5, help="--serve: silence (s) that finalizes a segment")
    p.add_argument("--server-log", type=Path, default=None, help="--serve: keep the server's log here")
    p.add_argument("--streams", type=int, nargs="+", default=[32], help="concurrent streams (runs in turn)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--api-key", default=None)
    args = p.parse_args(argv)
    if urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("loadtest.py: loopback only; point --url at 127.0.0.1")
    if not (all(1 <= n <= 256 for n in args.streams) and 0 < args.seconds <= 600):
        raise SystemExit("loadtest.py: --streams must be in [1, 256] and --seconds in (0, 600]")
    failed = False
    with served(args.serve, args) if args.serve else contextlib.nullcontext(args.url) as url:
        for streams in args.streams:
            report = asyncio.run(run(args, url, streams))
            print(json.dumps(report), flush=True)
            failed |= bool(report["streams_with_problems"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
