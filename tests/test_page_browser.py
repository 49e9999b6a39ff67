"""The browser page end to end: ``speechkit serve`` with the packaged demo model on loopback, headless
Chromium whose fake microphone plays two of the demo's held-out sentences, driven over the DevTools
protocol (CDP) with a real mouse click; every word of the sentences must appear as final text.

Chromium comes from Debian (``chromium-headless-shell``, installed by ``make install`` as root); without it
the test skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

websockets = pytest.importorskip("websockets")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

import numpy as np  # noqa: E402

from speechkit.audio import SAMPLE_RATE, load_audio  # noqa: E402
from speechkit.model.hub import DEMO_MODEL  # noqa: E402
from speechkit.testing.audio import write_audio  # noqa: E402

LEAD_S, PAUSE_S = 1.5, 1.5  # silence before the first sentence and after each
CHROMIUMS = ("chromium-headless-shell", "chromium", "chromium-browser")
FRAME_BYTES = SAMPLE_RATE // 10 * 2  # the page's worklet sends 100 ms of pcm16

# Injected before the page's own script: counts the audio frames the page sends and keeps every message
# it receives, and records each text the partial line shows (to prove partials were rendered).
PROBE = """
window.__probe = {frames: [], messages: [], partials: []};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => window.__probe.messages.push(JSON.parse(e.data)));
  }
  send(data) { if (typeof data !== "string") window.__probe.frames.push(data.byteLength); return super.send(data); }
};
document.addEventListener("DOMContentLoaded", () => {
  const partial = document.getElementById("partial");
  new MutationObserver(() => { if (partial.textContent) window.__probe.partials.push(partial.textContent); })
    .observe(partial, {childList: true, characterData: true, subtree: true});
});
"""
STATE = """JSON.stringify({probe: window.__probe, status: document.getElementById("status").textContent,
  finals: [...document.querySelectorAll("#finals p.final")].map((p) => [Number(p.dataset.segment), p.textContent])})"""

chromium = next((path for path in map(shutil.which, CHROMIUMS) if path), None)
pytestmark = pytest.mark.skipif(
    chromium is None, reason="needs headless Chromium (make install as root: apt-get install chromium-headless-shell)"
)


def _wait_for(what: str, probe, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{what} did not appear within {timeout} s; log:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """The port of a ``speechkit serve --model demo`` on an OS-chosen loopback port."""
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "speechkit.cli", "serve", "--model", DEMO_MODEL, "--port", "0",
           "--device", "cpu", "--dtype", "float32"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        running = _wait_for("the server's address", lambda: re.search(r"running on http://127\.0\.0\.1:(\d+)",
                            log.read_text()), 60, proc, log)  # fmt: skip
        yield int(running.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def spoken(demo_sentences) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """The fake microphone's audio: the first two held-out demo sentences (en, es) after ``LEAD_S`` of silence,
    each followed by ``PAUSE_S``; and each sentence's (start s, end s, text)."""
    pieces, spans, at = [np.zeros(round(LEAD_S * SAMPLE_RATE), np.float32)], [], LEAD_S
    for path, text in demo_sentences[:2]:
        wave = load_audio(path).samples
        spans.append((at, at + len(wave) / SAMPLE_RATE, text))
        pieces += [wave, np.zeros(round(PAUSE_S * SAMPLE_RATE), np.float32)]
        at = spans[-1][1] + PAUSE_S
    return np.concatenate(pieces), spans


@pytest.fixture
def devtools(tmp_path, spoken):
    """The browser-level DevTools WebSocket URL of a headless Chromium with a WAV-fed fake microphone
    (Chromium reads 16-bit PCM WAV only)."""
    wav = write_audio(tmp_path / "sentences.wav", spoken[0], subtype="PCM_16")
    profile, log = tmp_path / "profile", tmp_path / "chromium.log"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
           "--remote-debugging-port=0", f"--user-data-dir={profile}",
           "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
           f"--use-file-for-fake-audio-capture={wav}", "about:blank"]  # fmt: skip
    with log.open("w") as out:  # its own process group: Debian's launcher is a shell script that does not exec
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        _wait_for("DevToolsActivePort", lambda: port_file.is_file() and port_file.read_text().count("\n"),
                  30, proc, log)  # fmt: skip
        port, path = port_file.read_text().split()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Tab:
    """One page target over a browser DevTools connection; ``call`` returns a command's result."""

    def __init__(self, ws) -> None:
        self.ws, self.session, self.next_id = ws, None, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        while True:  # events arrive in between; only the answer matters
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    async def open(self, url: str) -> None:
        target = await self.call("Target.createTarget", url="about:blank")
        self.session = (await self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True))[
            "sessionId"
        ]
        await self.call("Page.enable")
        await self.call("Page.addScriptToEvaluateOnNewDocument", source=PROBE)
        await self.call("Page.navigate", url=url)

    async def value(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def click(self, element_id: str) -> None:
        """A real mouse click (a user gesture, as the AudioContext needs) at the element's centre."""
        box = await self.value(f'JSON.stringify(document.getElementById("{element_id}").getBoundingClientRect())')
        box = json.loads(box)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def until(self, what: str, done, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = json.loads(await self.value(STATE) or "null") if await self.value("!!window.__probe") else None
            if state and done(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"page: {what} within {timeout} s; last state {json.dumps(state)[:2000]}")
            await asyncio.sleep(0.2)


async def _drive(devtools_url: str, page_url: str, finals_wanted: int) -> tuple[dict, dict]:
    async with websockets.connect(devtools_url, max_size=2**24) as ws:
        tab = Tab(ws)
        await tab.open(page_url)
        await tab.until("the start button", lambda s: s["status"] == "", 20)
        await tab.click("start")
        live = await tab.until(f"{finals_wanted} final segments", lambda s: len(s["finals"]) >= finals_wanted, 40)
        await tab.click("stop")
        ended = await tab.until("done after stop", lambda s: s["status"] == "done", 20)
    return live, ended


def test_page_streams_the_fake_microphone_to_final_text(server, devtools, spoken):
    port = server
    live, ended = asyncio.run(_drive(devtools, f"http://127.0.0.1:{port}/", finals_wanted=2))
    assert live["status"] == "listening"  # the socket opened and the server answered ready
    probe = ended["probe"]
    frames = probe["frames"]
    assert len(frames) >= 20 and set(frames) == {FRAME_BYTES}, frames[:50]  # >= 2 s of whole 100 ms frames
    types = [m["type"] for m in probe["messages"]]
    assert types[0] == "ready" and types[-1] == "done" and "partial" in types and "error" not in types, types
    finals = [m for m in probe["messages"] if m["type"] == "final"]
    # every final message is on the page, in order, ids without gaps or repeats
    assert ended["finals"] == [[m["segment_id"], m["text"]] for m in finals]
    assert [m["segment_id"] for m in finals] == list(range(len(finals)))
    assert all(0 <= m["start"] < m["end"] <= len(frames) / 10 + 0.05 for m in finals)  # times within audio sent
    # the clip itself went through: the first segment is the first sentence (not the beep a second of
    # Chromium's default fake microphone), and the demo model heard its words
    start, end, text = spoken[1][0]
    assert abs(finals[0]["start"] - start) < 0.4 and abs(finals[0]["end"] - end) < 0.6, (finals[0], start, end)
    partial_texts = {m["text"] for m in probe["messages"] if m["type"] == "partial"}
    assert partial_texts & set(probe["partials"]), "no partial message was shown on the partial line"
    assert all(m["text"] for m in finals)
    for (_, _, text), final in zip(spoken[1], finals, strict=False):
        said, heard = (set(re.findall(r"\w+", t.lower())) for t in (text, final["text"]))
        assert said <= heard, ([m["text"] for m in finals], text)
