"""streaming/loadtest.py: its segment checks on hand-made logs, and a short run against a real tiny server."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("websockets")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from speechkit.testing.audio import jfk_path  # noqa: E402

_SPEC = importlib.util.spec_from_file_location("loadtest", Path(__file__).parents[1] / "streaming" / "loadtest.py")
loadtest = importlib.util.module_from_spec(_SPEC)
sys.modules["loadtest"] = loadtest  # its dataclasses look their module up there
_SPEC.loader.exec_module(loadtest)


def _final(i: int, start: float, end: float) -> dict:
    return {"type": "final", "segment_id": i, "start": start, "end": end, "text": "x"}


@pytest.mark.parametrize(
    ("finals", "partials", "done", "error", "problems"),
    [
        ([_final(0, 0, 1), _final(1, 1.5, 2)], {0, 1}, True, None, []),
        ([], set(), True, None, []),  # silence: no segment at all
        ([_final(0, 0, 1), _final(2, 3, 4)], set(), True, None, ["segment 1 lost"]),
        ([_final(0, 0, 1)], {0, 1}, True, None, ["segment 1 had partials but no final"]),
        ([_final(0, 0, 1), _final(0, 0, 1)], set(), True, None,
         ["segment 0 finalized twice", "segment 0 (0 s) overlaps segment 0 (ends 1 s)"]),
        ([_final(0, 0, 1), _final(1, 0.5, 2)], set(), True, None, ["segment 1 (0.5 s) overlaps segment 0 (ends 1 s)"]),
        ([], set(), False, "busy: the server is at its limit of 2 streams",
         ["error: busy: the server is at its limit of 2 streams", "the stream ended without done"]),
    ],
)  # fmt: skip
def test_segment_problems(finals, partials, done, error, problems):
    log = loadtest.StreamLog(finals=finals, partial_ids=partials, done=done, error=error)
    assert loadtest.segment_problems(log) == problems


def test_loopback_only():
    with pytest.raises(SystemExit, match="^loadtest.py: loopback only; point --url at 127.0.0.1$"):
        loadtest.main(["a.wav", "--url", "ws://10.0.0.1:8000/v1/stream"])
    with pytest.raises(SystemExit, match=r"^loadtest.py: --streams must be in \[1, 256\] and --seconds in \(0, 600\]$"):
        loadtest.main(["a.wav", "--streams", "0"])


def test_short_run_against_a_tiny_server(capsys, tmp_path):
    """3 streams for 6 s (CI's cut of the 32 x 60 s run in streaming/LOADTEST.md): every segment final once."""
    if jfk_path() is None:
        pytest.skip("shared/data/audio/jfk.flac is not next to this checkout")  # the VAD takes no synthetic tones
    log = tmp_path / "serve.log"
    args = ["--serve", "tiny", "--streams", "3", "--seconds", "6", "--server-log", str(log)]
    rc = loadtest.main([str(jfk_path()), *args])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["problems"] == [] and report["streams_with_problems"] == 0
    assert report["finals"] >= 3 * 2  # JFK pauses at ~2.2 s and ~4.4 s: each stream closes two segments or more
    assert 0 < report["finalization_delay_p50_s"] <= report["finalization_delay_p95_s"] < 30
    assert report["server"]["batches"] > 0
    assert "running on http://127.0.0.1:" in log.read_text()  # the served server's log is kept
