"""The CLI over long audio: every output format per input, result-v2 JSON, summaries in parts, pinned errors."""

from __future__ import annotations

import json
import sys
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import srt
import webvtt

from speechkit.audio import SAMPLE_RATE
from speechkit.cli import main
from speechkit.inference.pipeline import Pipeline, Result
from speechkit.model.decoder import Decoder
from speechkit.testing.audio import write_audio
from speechkit.testing.corpora import has_speech_synthesis, talk

SCHEMA = json.loads(files("speechkit.schemas").joinpath("result-v2.json").read_text())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), np.float32)


def _speech(seconds: float, seed: int) -> np.ndarray:
    """espeak-ng speech filling ``seconds`` (the speech detector must take it for speech)."""
    if not has_speech_synthesis():
        pytest.skip("espeak-ng is not installed")
    return talk(seconds, seed)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two different files both named talk.flac: 14 s with speech at 1-5 s and 8-12 s."""
    root = tmp_path_factory.mktemp("twins")
    paths = []
    for seed, folder in ((1, "a"), (2, "b")):
        (root / folder).mkdir()
        x = np.concatenate([silence(1), _speech(4, seed), silence(3), _speech(4, seed + 10), silence(2)])
        paths.append(str(write_audio(root / folder / "talk.flac", x)))
    return paths


def _records(out: str) -> list[dict]:
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    for record in records:
        jsonschema.validate(record, SCHEMA)
    return records


def _fixed_text(monkeypatch):
    """Pipeline.run answers seven words per clip, so cues and subtitles have content to check."""

    def run(self, waves, spec, options, *, language=None, on_result=None, on_error=None):
        out = []
        for i, w in enumerate(waves):
            text = "one two three four five six seven"
            out.append(Result(w.source, spec.task.value, language, None, text, None, None, (7, 8), -0.25, (),
                              w.duration))  # fmt: skip
            on_result(i, out[-1])
        return out

    monkeypatch.setattr(Pipeline, "run", run)


def test_every_format_for_two_inputs_with_one_name(tiny_checkpoint, twins, tmp_path, capsys, monkeypatch):
    _fixed_text(monkeypatch)
    out = tmp_path / "out"
    argv = ["transcribe", *twins, "--model", str(tiny_checkpoint), "--format", "all", "--output-dir", str(out),
            "--max-segment", "5", "--max-line-width", "14", "--max-line-count", "1"]  # fmt: skip
    assert main(argv) == 0
    records = _records(capsys.readouterr().out)
    assert [r["file"] for r in records] == twins
    written = sorted(p.name for p in out.iterdir())
    stems = sorted({name.rsplit(".", 1)[0] for name in written})
    assert len(stems) == 2 and all(s.startswith("talk-") for s in stems)
    assert written == sorted(f"{s}.{f}" for s in stems for f in ("json", "srt", "tsv", "txt", "vtt"))
    for record in records:
        segments = record["segments"]
        for s, (start, end) in zip(segments, [(1.0, 5.0), (8.0, 12.0)], strict=True):
            assert start - 0.3 <= s["start"] <= start and end <= s["end"] <= end + 0.3  # 0.2 s of padding
        # 34 characters in lines of <= 14, one line per cue: three cues with interpolated times
        cues = segments[0]["cues"]
        assert [c["text"] for c in cues] == ["one two three", "four five six", "seven"]
        assert all(c["estimated"] for c in cues) and not segments[0]["estimated"]
        assert cues[0]["start"] == segments[0]["start"] and cues[-1]["end"] == segments[0]["end"]
        stem = next(out / s for s in stems if json.loads((out / f"{s}.json").read_text()) == record)
        parsed = list(srt.parse(stem.with_suffix(".srt").read_text()))
        assert [c.content for c in parsed] == ["one two three", "four five six", "seven"] * 2
        assert parsed[0].start.total_seconds() == segments[0]["start"]
        assert parsed[-1].end.total_seconds() == segments[1]["end"]
        assert [c.text for c in webvtt.read(str(stem.with_suffix(".vtt")))] == [c.content for c in parsed]
        tsv = stem.with_suffix(".tsv").read_text().splitlines()
        assert tsv[0] == "start\tend\ttext" and tsv[1].startswith(f"{round(segments[0]['start'] * 1000)}\t")
        assert len(tsv) == 7 and tsv[-1].endswith(f"\t{round(segments[1]['end'] * 1000)}\tseven")
        assert stem.with_suffix(".txt").read_text().splitlines() == ["one two three four five six seven"] * 2


def test_txt_to_stdout_and_progress_with_rtfx_on_a_terminal(tiny_checkpoint, twins, capsys, monkeypatch):
    _fixed_text(monkeypatch)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["transcribe", twins[0], "--model", str(tiny_checkpoint), "--max-segment", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "one two three four five six seven one two three four five six seven\n"
    assert "transcribe: 9/9 s of speech" in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("transcribe: 14.0 s of audio in ") and ", RTFx " in last


def test_summarize_in_parts_loads_unmerged_and_joins_with_lora_off(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    x = np.concatenate([_speech(18, 4), silence(2), _speech(18, 5), silence(2), _speech(18, 6), silence(2)])
    path = str(write_audio(tmp_path / "minute.flac", x))
    switches, modes = [], []
    real_switch, real_load = Decoder.set_lora_enabled, Pipeline.load.__func__
    monkeypatch.setattr(Decoder, "set_lora_enabled", lambda self, on: switches.append(on) or real_switch(self, on))
    spy_load = classmethod(lambda cls, *a, **k: modes.append(k["lora"]) or real_load(cls, *a, **k))
    monkeypatch.setattr(Pipeline, "load", spy_load)
    argv = ["summarize", path, "--model", str(tiny_checkpoint), "--format", "json", "--max-request", "20",
            "--max-new-tokens", "4", "--dtype", "float32"]  # fmt: skip
    assert main(argv) == 0
    (record,) = _records(capsys.readouterr().out)
    assert modes == ["unmerged"] and switches == [False, True]
    assert record["task"] == "summarize" and len(record["segments"]) == 3 and record["duration"] == 60.0


def test_request_that_cannot_fit_the_context(tiny_checkpoint, twins, capsys):
    argv = ["ask", twins[0], "--model", str(tiny_checkpoint), "--max-new-tokens", "131000"]
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"speechkit ask: error: {twins[0]}: a request of 9 s of speech needs ")
    assert line.endswith(
        "tokens (131000 of them new), beyond the model's context of 131072 tokens; lower --max-request or "
        "--max-new-tokens"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "srt"], "--format srt writes files; add --output-dir DIR"),
        (["--vad-aggressiveness", "5"], "VAD aggressiveness=5 must be 0, 1, 2 or 3"),
        (["--pad", "-1"], "pad_s=-1.0 must be >= 0"),
        (["--max-line-count", "2"], "max_line_count needs max_line_width: lines are only counted once text is wrapped"),
    ],
)
def test_usage_errors(twins, capsys, flags, message):
    assert main(["transcribe", twins[0], "--model", "unused", *flags]) == 2
    assert capsys.readouterr().err.strip() == f"speechkit transcribe: error: {message}"


def test_max_request_below_one_second_is_a_usage_error(twins, capsys):
    assert main(["summarize", twins[0], "--model", "unused", "--max-request", "0.5"]) == 2
    assert capsys.readouterr().err.strip() == "speechkit summarize: error: max_request_s=0.5 must be at least 1 s"
