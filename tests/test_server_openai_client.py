"""The official ``openai`` Python client against the server's OpenAI-compatible endpoints (in-process, no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from starlette.testclient import TestClient  # noqa: E402

from speechkit.server.app import ServerOptions, create_app  # noqa: E402
from speechkit.streaming import StreamOptions, Word  # noqa: E402
from speechkit.testing.audio import write_audio  # noqa: E402
from speechkit.testing.streaming import EnergyDetector, ScriptedStep, scripted_audio  # noqa: E402

KEY = "secret"
SCRIPT = [Word(0.5, 0.9, "hello"), Word(1.0, 1.4, "big"), Word(1.5, 2.0, "world"),
          Word(3.0, 3.5, "second"), Word(3.6, 4.2, "segment")]  # fmt: skip
AUDIO = scripted_audio(SCRIPT, 5.0)


@pytest.fixture
def client():
    options = ServerOptions(api_key=KEY, max_streams=2, stream=StreamOptions(min_chunk_s=0.5))
    with TestClient(create_app(ScriptedStep(SCRIPT), options, EnergyDetector)) as http:
        # the official client over the in-process transport: every request goes through the real app
        yield openai.OpenAI(api_key=KEY, base_url="http://testserver/v1", http_client=http, max_retries=0)


@pytest.fixture
def wav(tmp_path):
    return write_audio(tmp_path / "a.wav", AUDIO)


def test_every_response_format(client, wav):
    with wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="speechkit", file=f)
    assert result.text == "hello big world second segment"
    for fmt, expected in (("text", "hello big world second segment"), ("srt", "00:00:00,500 --> 00:00:02,000"),
                          ("vtt", "WEBVTT")):  # fmt: skip
        with wav.open("rb") as f:
            body = client.audio.transcriptions.create(model="speechkit", file=f, response_format=fmt)
        assert expected in (body if isinstance(body, str) else body.text)
    with wav.open("rb") as f:
        verbose = client.audio.translations.create(model="speechkit", file=f, response_format="verbose_json")
    assert verbose.text == "HELLO BIG WORLD SECOND SEGMENT"
    assert [(s.start, s.end) for s in verbose.segments] == [(0.5, 2.0), (3.0, 4.2)]


def test_streamed_response(client, wav):
    with wav.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="speechkit", file=f, stream=True))
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert events[-1].text == "hello big world second segment"
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == events[-1].text


def test_auth_error_is_an_openai_error(client, wav):
    bad = client.with_options(api_key="wrong")
    with wav.open("rb") as f, pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
        bad.audio.transcriptions.create(model="speechkit", file=f)
