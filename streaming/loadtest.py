"""Bounded load test against a local ``speechkit serve``: N concurrent real-time streams for T seconds.

    python streaming/loadtest.py FILE --streams 32 --seconds 60 [--url ws://127.0.0.1:8000/v1/stream]

Loopback only (refuses other hosts). Each stream replays FILE in 100 ms pcm16 frames at real-time pace,
looping until T, then ends. Reports lost or duplicated final segments and p50/p95 finalization delay
(wall time from sending a segment's last audio to receiving its final message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlparse

import numpy as np
import websockets

from speechkit.audio import SAMPLE_RATE, load_audio

FRAME_S = 0.1


async def one_stream(url: str, pcm: np.ndarray, seconds: float, key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    sent_at: list[tuple[float, float]] = []  # (stream seconds sent, wall time)
    finals, delays = [], []
    async with websockets.connect(url, additional_headers=headers, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "format": "pcm16"}))
        assert json.loads(await ws.recv())["type"] == "ready"

        async def send():
            frame, t0, i = round(FRAME_S * SAMPLE_RATE), time.monotonic(), 0
            while (i + 1) * FRAME_S <= seconds:
                start = (i * frame) % max(len(pcm) - frame, 1)
                await ws.send(pcm[start : start + frame].tobytes())
                i += 1
                sent_at.append((i * FRAME_S, time.monotonic()))
                await asyncio.sleep(max(t0 + i * FRAME_S - time.monotonic(), 0))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "final":
                finals.append(msg["segment_id"])
                arrived = next((w for s, w in sent_at if s >= msg["end"]), None)
                if arrived is not None:
                    delays.append(time.monotonic() - arrived)
            elif msg["type"] in ("done", "error"):
                break
        await sender
    return {"finals": finals, "delays": delays}


async def run(args) -> None:
    wave = load_audio(args.file, keep_8k=False)
    pcm = (np.clip(wave.samples, -1, 1) * 32767).astype("<i2")
    results = await asyncio.gather(*(one_stream(args.url, pcm, args.seconds, args.api_key)
                                     for _ in range(args.streams)))  # fmt: skip
    lost_or_dup = sum(r["finals"] != list(range(len(r["finals"]))) for r in results)
    delays = [d for r in results for d in r["delays"]]
    print(json.dumps({
        "streams": args.streams, "seconds": args.seconds, "finals": sum(len(r["finals"]) for r in results),
        "streams_with_lost_or_duplicated_segments": lost_or_dup,
        "finalization_delay_p50_s": round(float(np.percentile(delays, 50)), 3) if delays else None,
        "finalization_delay_p95_s": round(float(np.percentile(delays, 95)), 3) if delays else None,
    }))  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--api-key", default=None)
    args = p.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadtest.py: loopback only; point --url at 127.0.0.1")
    if not (1 <= args.streams <= 256 and 0 < args.seconds <= 600):
        raise SystemExit("loadtest.py: --streams must be in [1, 256] and --seconds in (0, 600]")
    asyncio.run(run(args))
