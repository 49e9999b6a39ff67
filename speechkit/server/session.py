"""One WebSocket stream (protocol v1, see ``streaming/PROTOCOL.md``): start message, audio frames, end.

The socket is read on the event loop; the engine runs on a worker thread, one call at a time per
stream, fed every frame that arrived since its last call. Errors are sent as one JSON message, then
the socket is closed with the matching application close code.
"""

from __future__ import annotations

import asyncio
import json
import time
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from speechkit.audio import SAMPLE_RATE
from speechkit.errors import SpeechkitError
from speechkit.streaming.engine import StreamingEngine
from speechkit.streaming.records import Segment, StreamOptions, Update

PROTOCOL_VERSION = 1
FORMATS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
START_FIELDS = {"type", "task", "language", "target", "cot", "sample_rate", "format", "api_key"}

# application close codes: 4000 + the HTTP status they mirror
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_BUSY = 4429
CLOSE_INTERNAL = 4500


@dataclass
class ProtocolError(Exception):
    """A client mistake: sent as ``{"type": "error", "code", "message"}`` before closing with ``close_code``."""

    code: str
    message: str
    close_code: int = CLOSE_BAD_REQUEST


def parse_start(text: str | None, defaults: StreamOptions) -> tuple[StreamOptions, np.dtype, str | None]:
    """The start message's options, sample format and API key; ProtocolError on anything unusable."""
    try:
        msg = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise ProtocolError("bad_start", 'the first message must be a JSON text frame {"type": "start", ...}')
    unknown = sorted(set(msg) - START_FIELDS)
    if unknown:
        raise ProtocolError("bad_start", f"unknown start fields: {', '.join(unknown)}")
    if msg.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise ProtocolError(
            "bad_sample_rate", f"sample_rate {msg.get('sample_rate')!r} is not supported; send 16000 Hz mono"
        )
    fmt = msg.get("format", "pcm16")
    if fmt not in FORMATS:
        raise ProtocolError("bad_format", f"format {fmt!r} is not supported; use pcm16 or f32")
    try:
        task = msg.get("task", defaults.task)
        target = msg.get("target", None if "task" in msg else defaults.target)
        options = StreamOptions(
            task, target, bool(msg.get("cot", False)), msg.get("language"), defaults.agreement,
            defaults.min_chunk_s, defaults.pause_s, defaults.max_segment_s,
        )  # fmt: skip
    except SpeechkitError as err:
        raise ProtocolError("bad_start", str(err)) from None
    return options, FORMATS[fmt], msg.get("api_key")


def decode_frame(data: bytes, dtype: np.dtype) -> np.ndarray:
    """A binary frame as (N,) float32 samples; ProtocolError for a torn or non-finite frame."""
    if len(data) % dtype.itemsize:
        raise ProtocolError(
            "bad_frame", f"binary frame of {len(data)} bytes is not a whole number of {dtype.itemsize}-byte samples"
        )
    samples = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "i":
        return (samples.astype(np.float32) / 32768.0).astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError("bad_frame", "f32 frame contains NaN or infinite samples")
    return samples.astype(np.float32)


def segment_message(segment: Segment) -> dict:
    """The JSON a client receives for a partial or final segment."""
    msg = {
        "type": "final" if segment.final else "partial",
        "segment_id": segment.id,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "committed": segment.committed_text,
    }
    if segment.translation is not None:
        msg["translation"] = segment.translation
    return msg


class Arrivals:
    """Wall-clock arrival time of stream positions, to measure finalization delay server-side."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.walls: list[float] = []

    def add(self, total_samples: int) -> None:
        self.samples.append(total_samples)
        self.walls.append(time.monotonic())

    def wall(self, seconds: float) -> float:
        i = min(bisect_left(self.samples, round(seconds * SAMPLE_RATE)), len(self.walls) - 1)
        return self.walls[i]


class Session:
    """Runs one accepted stream; ``run()`` returns when the stream ends, fails or goes idle."""

    def __init__(self, ws, engine: StreamingEngine, dtype: np.dtype, loop_executor, metrics, idle_s: float) -> None:
        self.ws, self.engine, self.dtype = ws, engine, dtype
        self.executor, self.metrics, self.idle_s = loop_executor, metrics, idle_s
        self.pending: list[np.ndarray] = []
        self.ready = asyncio.Event()
        self.ended = False
        self.arrivals = Arrivals()
        self.received = 0

    async def run(self) -> None:
        worker = asyncio.create_task(self._work())
        try:
            await self._receive()
        except BaseException:
            worker.cancel()
            raise
        await worker

    async def _receive(self) -> None:
        while not self.ended:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), timeout=self.idle_s)
            except TimeoutError:
                raise ProtocolError("idle_timeout", f"no message for {self.idle_s:g} s", CLOSE_IDLE) from None
            if msg["type"] == "websocket.disconnect":
                raise ConnectionResetError("client disconnected")
            if msg.get("bytes") is not None:
                samples = decode_frame(msg["bytes"], self.dtype)
                self.received += len(samples)
                self.arrivals.add(self.received)
                self.pending.append(samples)
                self.ready.set()
            elif _is_end(msg.get("text")):
                self.ended = True
                self.ready.set()
            else:
                raise ProtocolError("bad_message", 'after start, send binary audio frames or {"type": "end"}')

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            self.ready.clear()
            done = self.ended
            chunks, self.pending = self.pending, []
            update = await loop.run_in_executor(self.executor, self._step, chunks, done)
            await self._send(update)
            if done:
                await self.ws.send_text(json.dumps({"type": "done", "duration": round(self.engine.time, 3)}))
                return

    def _step(self, chunks: list[np.ndarray], done: bool) -> Update:
        for chunk in chunks:
            self.engine.insert_audio(chunk)
        return self.engine.finish() if done else self.engine.process()

    async def _send(self, update: Update) -> None:
        now = time.monotonic()
        for segment in update.finals:
            if self.arrivals.walls:
                self.metrics.finalization.observe(max(now - self.arrivals.wall(segment.end), 0.0))
            await self.ws.send_text(json.dumps(segment_message(segment), ensure_ascii=False))
        if update.partial is not None:
            await self.ws.send_text(json.dumps(segment_message(update.partial), ensure_ascii=False))


def _is_end(text: str | None) -> bool:
    try:
        return json.loads(text or "") == {"type": "end"}
    except json.JSONDecodeError:
        return False
