"""OpenAI-compatible ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``.

Multipart fields: ``file``, ``model`` (accepted, recorded), ``language``, ``prompt`` (context appended to
the instruction, never replacing it), ``response_format`` (json, text, srt, vtt, verbose_json) and
``stream`` (server-sent events ``transcript.text.delta`` / ``transcript.text.done``, OpenAI's names).
Translations go to English like OpenAI's; the extra field ``target_language`` picks another target.
The audio is cut at detected pauses and the segments are decoded in one batch.
"""

from __future__ import annotations

import asyncio
import io
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.errors import AudioError, SpeechkitError
from speechkit.output.cues import TimedText
from speechkit.output.writers import write_srt, write_vtt
from speechkit.streaming.step import StepRequest
from speechkit.text.prompts import PromptSpec, Task

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
# containers libsndfile cannot read, by their first bytes: ISO-BMFF (m4a/mp4) and EBML (webm/mkv)
_FOREIGN_CONTAINERS = {b"ftyp": "mp4/m4a", b"\x1a\x45\xdf\xa3": "webm/matroska"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": "invalid_request_error", "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def openai_routes(state) -> list[Route]:
    async def transcriptions(request: Request) -> Response:
        return await _handle(request, state, translate=False)

    async def translations(request: Request) -> Response:
        return await _handle(request, state, translate=True)

    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
    ]


async def _handle(request: Request, state, translate: bool) -> Response:
    from speechkit.server.app import bearer

    started = time.monotonic()
    try:
        if not state.authorized(bearer(request.headers)):
            raise ApiError(401, "missing or wrong API key", "unauthorized")
        limit = int(state.options.max_upload_mb * 1024 * 1024)
        if int(request.headers.get("content-length") or 0) > limit:
            raise ApiError(413, f"upload exceeds the limit of {state.options.max_upload_mb:g} MB", "too_large")
        form = await request.form(max_part_size=limit)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart field 'file' is required", "missing_file")
        fmt = str(form.get("response_format") or "json")
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format {fmt!r} is not supported; use {', '.join(RESPONSE_FORMATS)}",
                           "bad_response_format")  # fmt: skip
        spec, language = _spec(form, translate)
        data = await upload.read()
        samples = _decode_upload(data)
        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(state.executor, _transcribe, state, samples, spec)
    except ApiError as err:
        return err.response()
    finally:
        state.metrics.http_requests.observe(time.monotonic() - started)
    task = "translate" if translate else "transcribe"
    if str(form.get("stream") or "false").lower() == "true":
        return StreamingResponse(_events(segments), media_type="text/event-stream")
    return _respond(segments, fmt, task, language, len(samples) / SAMPLE_RATE)


def _spec(form, translate: bool) -> tuple[PromptSpec, str | None]:
    prompt = form.get("prompt") or None
    language = form.get("language") or None
    try:
        if translate:
            return PromptSpec(Task.AST, str(form.get("target_language") or "en"), prompt), language
        return PromptSpec(Task.ASR, context=prompt), language
    except SpeechkitError as err:
        raise ApiError(400, str(err), "bad_field") from None


def _decode_upload(data: bytes):
    try:
        return load_audio(data, keep_8k=False).samples
    except AudioError as err:
        kind = next((name for magic, name in _FOREIGN_CONTAINERS.items() if magic in data[:12]), None)
        if kind is None:
            raise ApiError(400, f"audio could not be decoded: {err}", "bad_audio") from None
    try:
        import av  # the optional 'decode' extra (PyAV)
    except ImportError:
        raise ApiError(415, f"{kind} audio needs the decoder extra: pip install 'speechkit[decode]'",
                       "unsupported_container") from None  # fmt: skip
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        import numpy as np

        frames = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return np.concatenate(frames).astype(np.float32)


def _transcribe(state, samples, spec: PromptSpec) -> list[TimedText]:
    regions = state.detector()(samples)
    requests = [StepRequest(samples[round(r.start * SAMPLE_RATE) : round(r.end * SAMPLE_RATE)], r.start, spec)
                for r in regions]  # fmt: skip
    results = state.batcher(requests)
    return [TimedText(r.start, r.end, res.text.strip()) for r, res in zip(regions, results, strict=True)
            if res.text.strip()]  # fmt: skip


def _respond(segments: list[TimedText], fmt: str, task: str, language: str | None, duration: float) -> Response:
    text = " ".join(s.text for s in segments)
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "verbose_json":
        return JSONResponse({"task": task, "language": language, "duration": round(duration, 3), "text": text,
                             "segments": [{"id": i, "start": s.start, "end": s.end, "text": s.text}
                                          for i, s in enumerate(segments)]})  # fmt: skip
    out = io.StringIO()
    (write_srt if fmt == "srt" else write_vtt)(segments, out)
    return PlainTextResponse(out.getvalue(), media_type="text/vtt" if fmt == "vtt" else "application/x-subrip")


async def _events(segments: list[TimedText]):
    for i, segment in enumerate(segments):
        delta = segment.text if i == 0 else " " + segment.text
        yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n"
    done = {"type": "transcript.text.done", "text": " ".join(s.text for s in segments)}
    yield f"data: {json.dumps(done)}\n\n"
