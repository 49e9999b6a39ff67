"""The eval runner on fixture corpora: end to end, resume, torn lines, and SIGKILL at random points."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechkit.cli import main
from speechkit.errors import SpeechkitError
from speechkit.evaluation.recognizer import Task, load_recognizer
from speechkit.scoring import Record, RecordWriter, read_records
from speechkit.testing.corpora import write_fixture_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_fixture_suite(tmp_path_factory.mktemp("fixture"))


def _eval_args(fixture, out, *extra, model="test:echo"):
    data, suite, _ = fixture
    return ["eval", "--suite", str(suite), "--data-root", str(data), "--model", str(model),
            "--out", str(out), "--batch-size", "2", *extra]  # fmt: skip


def _ids_exactly_once(out: Path, expected: dict[str, list[str]]) -> None:
    for name, ids in expected.items():
        lines = (out / f"{name}.jsonl").read_text("utf-8").splitlines()
        got = [json.loads(line)["id"] for line in lines]
        assert sorted(got) == sorted(ids), name


def test_eval_end_to_end_and_resume(fixture, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_eval_args(fixture, out)) == 0
    _ids_exactly_once(out, fixture[2])
    report = (out / "report.md").read_text("utf-8")
    assert "| cv-en | asr | wer | 9.09 | 7.61 | 4 |" in report
    assert "| fleurs-de-en-cot | ast_cot | bleu |" in report
    cot = read_records(out / "fleurs-de-en-cot.jsonl")
    assert [(r.pred_transcript, r.translation) for r in cot][:1] == [("Guten Morgen.", "Good morning.")]
    assert all(r.time > 0 and r.duration > 0.25 for r in cot)
    scores = json.loads((out / "scores.json").read_text("utf-8"))
    assert scores["openasr-ls-clean"]["per_lang"]["en"]["dropped"] == 1  # the empty reference
    meta = json.loads((out / "cv-en.jsonl.meta.json").read_text("utf-8"))
    assert meta["recognizer"]["model"] == "test-echo" and meta["finished"] and meta["normalizers"]
    capsys.readouterr()
    assert main(_eval_args(fixture, out)) == 0  # nothing left to decode
    assert "cv-en: decoded 0, wer 9.09" in capsys.readouterr().err
    _ids_exactly_once(out, fixture[2])


def test_resume_refuses_records_of_other_decoding_settings(fixture, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_eval_args(fixture, out, "--limit", "2", "--sets", "cv-en")) == 0
    meta_path = out / "cv-en.jsonl.meta.json"
    meta = json.loads(meta_path.read_text("utf-8"))
    meta["recognizer"]["model"] = "another-model"  # as if these records came from another checkpoint
    meta_path.write_text(json.dumps(meta), "utf-8")
    capsys.readouterr()
    assert main(_eval_args(fixture, out, "--sets", "cv-en")) != 0
    err = capsys.readouterr().err
    assert "its records were decoded with model='another-model', this run has model='test-echo'" in err
    assert [r.id for r in read_records(out / "cv-en.jsonl")] == ["en0.mp3", "en1.mp3"]  # nothing added or lost


def test_limit_and_torn_line_repair(fixture, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_eval_args(fixture, out, "--limit", "2", "--sets", "cv-en")) == 0
    path = out / "cv-en.jsonl"
    assert [r.id for r in read_records(path)] == ["en0.mp3", "en1.mp3"]
    path.write_bytes(path.read_bytes()[:-25])  # a kill in the middle of the second line
    assert main(_eval_args(fixture, out, "--sets", "cv-en")) == 0
    assert "cv-en: decoded 3," in capsys.readouterr().err
    _ids_exactly_once(out, {"cv-en": fixture[2]["cv-en"]})


@pytest.mark.parametrize("model", ["test:echo", "tiny"])
def test_sigkill_at_random_points_then_resume(fixture, tmp_path, tiny_checkpoint, model):
    # the echo helper, and the tiny official-layout speech model through the real pipeline
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "speechkit.cli",
           *_eval_args(fixture, out, model=tiny_checkpoint if model == "tiny" else model)]  # fmt: skip
    cmd[cmd.index("2", cmd.index("--batch-size"))] = "1"
    env = {**os.environ, "SPEECHKIT_TEST_DECODE_DELAY": "0.01", "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    total = sum(len(ids) for ids in fixture[2].values())
    for _ in range(3):
        target = rng.randint(1, total - 2)  # kill once this many records exist (plus up to 15 ms)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            written = sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl")) if out.exists() else 0
            if written >= target:
                time.sleep(rng.uniform(0, 0.015))
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    written = sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl"))
    assert written < total and not (out / "report.md").exists()  # the kills did land mid-run
    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    _ids_exactly_once(out, fixture[2])
    assert (out / "report.md").is_file()
    if model == "tiny":
        meta = json.loads((out / "cv-en.jsonl.meta.json").read_text("utf-8"))
        assert meta["recognizer"]["checkpoint"] == str(tiny_checkpoint) and meta["recognizer"]["dtype"] == "float32"


def test_record_writer_skips_done_and_repairs(tmp_path):
    path = tmp_path / "r.jsonl"
    with RecordWriter(path) as w:
        w.write([Record("a", text="x"), Record("b", text="y")])
    path.write_text(path.read_text() + '{"id": "c", "te', "utf-8")
    with RecordWriter(path) as w:
        assert w.repaired_bytes == len('{"id": "c", "te') and w.done == {"a", "b"}
        w.write([Record("a", text="x"), Record("c", text="z")])
    assert [r.id for r in read_records(path)] == ["a", "b", "c"]


def test_eval_errors(fixture, tmp_path, capsys, monkeypatch):
    assert main(["eval", "--suite", "nope", "--data-root", ".", "--model", "test:echo", "--out", "o"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("speechkit: error: unknown suite 'nope'; choose one of: asr-cv15, asr-fleurs,")
    with pytest.raises(SpeechkitError, match=r"^/ckpt: no such checkpoint directory"):
        load_recognizer("/ckpt")
    with pytest.raises(SpeechkitError, match=r"^task 'ast' needs a target language$"):
        Task("ast")
    assert main(_eval_args(fixture, tmp_path / "o", "--sets", "x,cv-en")) == 1
    assert capsys.readouterr().err == "speechkit: error: --sets: x not in suite fixture\n"


def test_group_batches_give_the_same_records(fixture, tmp_path, tiny_checkpoint):
    """``--group-batches``: the runner hands the model batch-size x group utterances a call, decoded as one
    continuous-batching group; the hypotheses do not change (fp32)."""
    runs = {}
    for name, extra in (("fixed", ()), ("grouped", ("--group-batches", "3"))):
        out = tmp_path / name
        assert main(_eval_args(fixture, out, "--sets", "cv-en", *extra, model=tiny_checkpoint)) == 0
        runs[name] = [(r.id, r.pred_text) for r in read_records(out / "cv-en.jsonl")]
        meta = json.loads((out / "cv-en.jsonl.meta.json").read_text("utf-8"))
        assert meta["batch_size"] == 2 and meta["group_batches"] == (3 if extra else 1)
    assert runs["grouped"] == runs["fixed"] and len(runs["fixed"]) == len(fixture[2]["cv-en"])
    assert main(_eval_args(fixture, tmp_path / "bad", "--group-batches", "0")) == 1
