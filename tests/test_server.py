"""Server on loopback in-process (Starlette's test client) with the scripted step: the WebSocket protocol,
OpenAI-compatible endpoints, health, metrics, the page, and every error message pinned."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from speechkit.server.app import ServerOptions, create_app  # noqa: E402
from speechkit.streaming import StreamOptions, Word  # noqa: E402
from speechkit.testing.audio import write_audio  # noqa: E402
from speechkit.testing.streaming import EnergyDetector, ScriptedStep, scripted_audio  # noqa: E402

SCRIPT = [Word(0.5, 0.9, "hello"), Word(1.0, 1.4, "big"), Word(1.5, 2.0, "world"),
          Word(3.0, 3.5, "second"), Word(3.6, 4.2, "segment")]  # fmt: skip
AUDIO = scripted_audio(SCRIPT, 5.0)


@pytest.fixture
def client():
    options = ServerOptions(api_key="secret", max_streams=2, max_upload_mb=1, stream=StreamOptions(min_chunk_s=0.5))
    with TestClient(create_app(ScriptedStep(SCRIPT), options, EnergyDetector)) as c:
        yield c


AUTH = {"Authorization": "Bearer secret"}


def _frames(fmt: str) -> list[bytes]:
    pcm = (AUDIO * 32767).astype("<i2") if fmt == "pcm16" else AUDIO.astype("<f4")
    return [pcm[i : i + 4000].tobytes() for i in range(0, len(pcm), 4000)]


@pytest.mark.parametrize("fmt", ["pcm16", "f32"])
def test_stream_partials_then_finals(client, fmt):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        ws.send_text(json.dumps({"type": "start", "task": "both", "target": "de", "sample_rate": 16000,
                                 "format": fmt}))  # fmt: skip
        assert ws.receive_json() == {"type": "ready", "protocol": 1}
        frames = _frames(fmt)
        # the first 1.75 s end inside "world": whichever calls the worker batches them into, a partial comes
        # back before any final; sending everything at once could let one finish() call see it all
        for frame in frames[:7]:
            ws.send_bytes(frame)
        messages = [ws.receive_json()]
        assert messages[0]["type"] == "partial"
        for frame in frames[7:]:
            ws.send_bytes(frame)
        ws.send_text(json.dumps({"type": "end"}))
        while True:
            msg = ws.receive_json()
            messages.append(msg)
            if msg["type"] == "done":
                break
    finals = [m for m in messages if m["type"] == "final"]
    assert [(m["segment_id"], m["text"], m["translation"]) for m in finals] == [
        (0, "hello big world", "HELLO BIG WORLD"), (1, "second segment", "SECOND SEGMENT")]  # fmt: skip
    assert messages[-1] == {"type": "done", "duration": 5.0}
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("start", "headers", "code", "close", "message"),
    [
        ("hello", AUTH, "bad_start", 4400, 'the first message must be a JSON text frame {"type": "start", ...}'),
        ({"type": "start", "rate": 1}, AUTH, "bad_start", 4400, "unknown start fields: rate"),
        ({"type": "start", "sample_rate": 44100}, AUTH, "bad_sample_rate", 4400,
         "sample_rate 44100 is not supported; send 16000 Hz mono"),
        ({"type": "start", "format": "mp3"}, AUTH, "bad_format", 4400,
         "format 'mp3' is not supported; use pcm16 or f32"),
        ({"type": "start", "task": "both"}, AUTH, "bad_start", 4400, "stream task 'both' needs a target language"),
        ({"type": "start"}, {}, "unauthorized", 4401, "missing or wrong API key"),
        ({"type": "start", "api_key": "nope"}, {}, "unauthorized", 4401, "missing or wrong API key"),
    ],
)
def test_bad_start(client, start, headers, code, close, message):
    with client.websocket_connect("/v1/stream", headers=headers) as ws:
        ws.send_text(start if isinstance(start, str) else json.dumps(start))
        assert ws.receive_json() == {"type": "error", "code": code, "message": message}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == close
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("fmt", "frame", "message"),
    [
        ("pcm16", b"\x00\x01\x02", "binary frame of 3 bytes is not a whole number of 2-byte samples"),
        ("f32", np.array([np.inf], "<f4").tobytes(), "f32 frame contains NaN or infinite samples"),
        ("f32", "not json", 'after start, send binary audio frames or {"type": "end"}'),
    ],
)
def test_malformed_frames_end_only_that_stream(client, fmt, frame, message):
    with client.websocket_connect("/v1/stream?x=1", headers=AUTH) as ws:
        ws.send_text(json.dumps({"type": "start", "format": fmt}))
        ws.receive_json()
        ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_text(frame)
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["message"] == message
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:  # the server still serves
        ws.send_text(json.dumps({"type": "start"}))
        assert ws.receive_json()["type"] == "ready"
        ws.send_text(json.dumps({"type": "end"}))
        assert ws.receive_json()["type"] == "done"


def test_stream_limit(client):
    with client.websocket_connect("/v1/stream", headers=AUTH) as a, client.websocket_connect(
        "/v1/stream", headers=AUTH
    ) as b:
        for ws in (a, b):
            ws.send_text(json.dumps({"type": "start"}))
            assert ws.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/stream", headers=AUTH) as c:
            c.send_text(json.dumps({"type": "start"}))
            assert c.receive_json()["message"] == "the server is at its limit of 2 streams"


@pytest.fixture
def wav(tmp_path):
    return write_audio(tmp_path / "a.wav", AUDIO).read_bytes()


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", '{"text":"hello big world second segment"}'),
        ("text", "hello big world second segment\n"),
        ("srt", "1\n00:00:00,500 --> 00:00:02,000\nhello big world\n\n"
                "2\n00:00:03,000 --> 00:00:04,200\nsecond segment\n"),
    ],
)
def test_openai_transcriptions(client, wav, fmt, expected):
    r = client.post("/v1/audio/transcriptions", headers=AUTH, files={"file": ("a.wav", wav)},
                    data={"model": "speechkit", "response_format": fmt})  # fmt: skip
    assert r.status_code == 200
    assert r.text.strip() == expected.strip()


def test_openai_verbose_translation_and_stream(client, wav):
    r = client.post("/v1/audio/translations", headers=AUTH, files={"file": ("a.wav", wav)},
                    data={"response_format": "verbose_json"})  # fmt: skip
    body = r.json()
    assert body["task"] == "translate" and body["text"] == "HELLO BIG WORLD SECOND SEGMENT"
    assert [(s["start"], s["end"]) for s in body["segments"]] == [(0.5, 2.0), (3.0, 4.2)]
    r = client.post("/v1/audio/transcriptions", headers=AUTH, files={"file": ("a.wav", wav)}, data={"stream": "true"})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]
    assert events[-1]["text"] == "hello big world second segment"


@pytest.mark.parametrize(
    ("headers", "data", "files", "status", "message"),
    [
        ({}, {}, "wav", 401, "missing or wrong API key"),
        (AUTH, {}, None, 400, "multipart field 'file' is required"),
        (AUTH, {"response_format": "xml"}, "wav", 400,
         "response_format 'xml' is not supported; use json, text, srt, vtt, verbose_json"),
        (AUTH, {}, "m4a", 415, "mp4/m4a audio needs the decoder extra: pip install 'speechkit[decode]'"),
        (AUTH, {}, "big", 413, "upload exceeds the limit of 1 MB"),
    ],
)
def test_openai_errors(client, wav, headers, data, files, status, message):
    pytest.importorskip("multipart")
    payload = {"wav": wav, "m4a": b"\x00\x00\x00\x20ftypM4A " + bytes(64), "big": bytes(2 * 1024 * 1024)}
    r = client.post("/v1/audio/transcriptions", headers=headers, data=data,
                    files={"file": ("f", payload[files])} if files else {"x": ("f", b"1")})  # fmt: skip
    assert r.status_code == status
    assert r.json()["error"]["message"] == message


def test_health_metrics_page(client):
    assert client.get("/health").json()["active_streams"] == 0
    text = client.get("/metrics").text
    assert "speechkit_active_streams 0" in text and "speechkit_finalization_delay_seconds_bucket" in text
    assert "AudioWorkletNode" in client.get("/").text
    assert "registerProcessor" in client.get("/worklet.js").text


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--max-new-tokens", "0"], "max_new_tokens=0 must be >= 1"), (["--max-batch", "0"], "max_batch=0 must be >= 1")],
)
def test_serve_flag_errors(capsys, flags, message):
    from speechkit.cli import main

    assert main(["serve", *flags]) == 2  # before any model is loaded
    assert capsys.readouterr().err == f"speechkit serve: error: {message}\n"
