"""The ASGI application: WebSocket ``/v1/stream``, OpenAI-compatible transcription endpoints, health,
metrics and the browser page. ``create_app`` takes the model step, so tests can serve a scripted one."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from speechkit import __version__
from speechkit.errors import ConfigError
from speechkit.server.batcher import Batcher
from speechkit.server.metrics import ServerMetrics
from speechkit.server.session import (
    CLOSE_BUSY,
    CLOSE_INTERNAL,
    CLOSE_UNAUTHORIZED,
    PROTOCOL_VERSION,
    ProtocolError,
    Session,
    parse_start,
)
from speechkit.streaming.detector import SpeechDetector, VadDetector
from speechkit.streaming.engine import StreamingEngine
from speechkit.streaming.records import StreamOptions
from speechkit.streaming.step import ModelStep

PAGE_FILES = {"/": ("index.html", "text/html"), "/worklet.js": ("worklet.js", "text/javascript")}


@dataclass(frozen=True)
class ServerOptions:
    """Limits and defaults of one server (``speechkit serve`` flags mirror these fields)."""

    api_key: str | None = None  # bearer token; None: no auth
    max_streams: int = 32
    max_upload_mb: float = 25.0  # OpenAI's own limit
    idle_timeout_s: float = 30.0
    max_batch: int = 8
    batch_wait_s: float = 0.005
    model_name: str = "speechkit"
    stream: StreamOptions = field(default_factory=StreamOptions)

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_upload_mb", "idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")


class ServerState:
    """What the handlers share: the batcher in front of the model, the worker threads, counters."""

    def __init__(self, step: ModelStep, options: ServerOptions, detector: Callable[[], SpeechDetector]) -> None:
        self.options = options
        self.detector = detector
        self.active = 0
        self.metrics = ServerMetrics(lambda: self.active, lambda: self.batcher.depth)
        self.batcher = Batcher(step, options.max_batch, options.batch_wait_s, self.metrics.on_batch)
        # one thread per stream at most, plus a few for HTTP requests: each blocks on the batcher
        self.executor = ThreadPoolExecutor(options.max_streams + 4, thread_name_prefix="speechkit-stream")

    def authorized(self, token: str | None) -> bool:
        expected = self.options.api_key
        return expected is None or (token is not None and hmac.compare_digest(token, expected))

    def close(self) -> None:
        self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def bearer(request_headers) -> str | None:
    value = request_headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def create_app(
    step: ModelStep, options: ServerOptions | None = None, detector: Callable[[], SpeechDetector] = VadDetector
) -> Starlette:
    """The server around ``step`` (wrapped in a dynamic batcher); ``detector()`` makes one per stream."""
    from speechkit.server.openai_api import openai_routes

    state = ServerState(step, options or ServerOptions(), detector)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "protocol": PROTOCOL_VERSION,
                             "active_streams": state.active, "max_streams": state.options.max_streams})  # fmt: skip

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        name, media = PAGE_FILES[request.url.path]
        return Response(resources.files("speechkit.server").joinpath("page", name).read_text(), media_type=media)

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await _stream(ws, state)
        except ProtocolError as err:
            state.metrics.errors_total += 1
            await _close_with(ws, err.code, err.message, err.close_code)
        except (WebSocketDisconnect, ConnectionResetError):
            state.metrics.errors_total += 1  # the client went away: nothing to send
        except Exception as err:  # noqa: BLE001  # one stream fails, the server stays up
            state.metrics.errors_total += 1
            await _close_with(ws, "internal", f"{type(err).__name__}: {err}", CLOSE_INTERNAL)

    routes = [
        Route("/health", health),
        Route("/metrics", metrics),
        *(Route(path, page) for path in PAGE_FILES),
        WebSocketRoute("/v1/stream", stream),
        *openai_routes(state),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.speechkit = state
    return app


async def _stream(ws: WebSocket, state: ServerState) -> None:
    try:
        first = await asyncio.wait_for(ws.receive(), timeout=state.options.idle_timeout_s)
    except TimeoutError:
        raise ProtocolError("bad_start", "no start message received") from None
    if first["type"] == "websocket.disconnect":
        raise WebSocketDisconnect()
    options, dtype, key = parse_start(first.get("text"), state.options.stream)
    if not state.authorized(bearer(ws.headers) or key):
        raise ProtocolError("unauthorized", "missing or wrong API key", CLOSE_UNAUTHORIZED)
    if state.active >= state.options.max_streams:
        raise ProtocolError("busy", f"the server is at its limit of {state.options.max_streams} streams", CLOSE_BUSY)
    state.active += 1
    state.metrics.streams_total += 1
    try:
        engine = StreamingEngine(state.batcher, options, state.detector())
        await ws.send_text(json.dumps({"type": "ready", "protocol": PROTOCOL_VERSION}))
        await Session(ws, engine, dtype, state.executor, state.metrics, state.options.idle_timeout_s).run()
        await ws.close(1000)
    finally:
        state.active -= 1


async def _close_with(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    try:
        await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(close_code)
    except (RuntimeError, WebSocketDisconnect):
        pass  # the socket is already gone
