"""Scoring equals the reference computations: the leaderboard's own scorer, jiwer, sacrebleu."""

import json
from pathlib import Path

import jiwer
import pytest
import sacrebleu

from speechkit.cli import main
from speechkit.errors import DataError, SpeechkitError
from speechkit.scoring import Record, get_normalizer, read_records, score_records
from speechkit.scoring.records import record_from_dict

GOLDEN = json.loads((Path(__file__).parent / "data/scoring/openasr_golden.json").read_text("utf-8"))


@pytest.mark.parametrize("lang", ["en", "de"])
def test_openasr_protocol_equals_leaderboard_golden(lang):
    golden = GOLDEN["sets"][lang]
    records = [record_from_dict(r, "golden") for r in golden["records"]]
    result = score_records(records, protocol="openasr").to_dict()
    want = golden["expected"]
    assert round(result["score"], 2) == want["wer"]
    assert (result["ins"], result["del"], result["sub"], result["n"]) == (
        want["ins"], want["del"], want["sub"], want["n"])  # fmt: skip
    assert round(result["rtfx"], 4) == want["rtfx"]
    assert result["per_lang"][lang]["dropped"] == len(records) - want["n"]


def test_openasr_2025_is_plain_jiwer_wer_after_era_normalizer():
    records = [record_from_dict(r, "golden") for r in GOLDEN["sets"]["en"]["records"]]
    norm = get_normalizer("openasr-english@1")
    pairs = [(norm(r.text), norm(r.pred_text)) for r in records]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref.strip() not in ("", "ignore time segment in scoring")]
    want = 100 * jiwer.wer([p[0] for p in pairs], [p[1] for p in pairs])
    assert score_records(records, protocol="openasr-2025").score == pytest.approx(want, abs=1e-9)


def test_cer_for_chinese_and_japanese_under_paper_protocol():
    records = [
        Record("a", src_lang="zh", text="今天天气很好。", pred_text="今天天气很好"),
        Record("b", src_lang="zh", text="我有三个苹果", pred_text="我有3个苹果"),
        Record("c", src_lang="ja", text="こんにちは 世界", pred_text="こんにちわ世界"),
    ]
    result = score_records(records)
    assert result.per_lang["zh"].metric == "cer"
    assert result.per_lang["zh"].score == pytest.approx(100 * 1 / 12)
    assert result.per_lang["ja"].score == pytest.approx(100 * 1 / 7)
    assert result.score == pytest.approx((100 / 12 + 100 / 7) / 2)  # unweighted mean, like the paper's Avg
    assert result.metric == "cer"


@pytest.mark.parametrize(("tgt", "tokenize"), [("de", "13a"), ("zh", "zh"), ("ja", "ja-mecab")])
def test_bleu_equals_sacrebleu(tgt, tokenize):
    refs = {"de": ["Das ist ein kleiner Test.", "Wir gehen morgen nach Hause!", "Guten Morgen, Welt."],
            "zh": ["今天天气很好。", "我们明天回家。", "你好，世界。"],
            "ja": ["今日はいい天気です。", "明日家に帰ります。", "こんにちは、世界。"]}[tgt]  # fmt: skip
    hyps = [refs[0], refs[1][:-2] + "。", "x " + refs[2]]
    records = [Record(str(i), task="ast", src_lang="en", tgt_lang=tgt, translation=r, pred_text=h)
               for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]  # fmt: skip
    result = score_records(records).to_dict()
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    want = bleu.corpus_score(hyps, [refs])
    assert result["metric"] == "bleu"
    assert result["score"] == pytest.approx(want.score, abs=1e-12)
    assert result["signature"] == str(bleu.get_signature())
    assert f"tok:{tokenize}" in result["signature"]
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert list(result["per_lang"]) == [f"en-{tgt}"]


def test_score_cli_json(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    rows = [{"audio_filepath": "a.wav", "duration": 2.0, "time": 0.5, "text": "Hello world.",
             "pred_text": "hello word", "source_lang": "en", "taskname": "asr"},
            {"id": "b", "duration": 3.0, "time": 0.5, "text": "", "pred_text": "noise",
             "src_lang": "en"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    assert main(["score", str(path), "--json", "--protocol", "openasr"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "wer" and out["score"] == 50.0 and out["n"] == 1
    assert (out["ins"], out["del"], out["sub"]) == (0, 0, 1)
    assert out["rtfx"] == 4.0  # only the scored record counts, as upstream never decodes empty references
    assert out["normalizer"] == "openasr-english@2"
    assert out["per_lang"]["en"]["dropped"] == 1
    assert main(["score", str(path)]) == 0
    assert "WER 50.00 over 1 utterances (protocol paper), RTFx 4.00" in capsys.readouterr().out


def test_score_errors(tmp_path, capsys):
    mixed = [Record("a", task="asr", text="x"), Record("b", task="ast", translation="y")]
    with pytest.raises(DataError, match="^records mix tasks asr, ast; score each task's records separately$"):
        score_records(mixed)
    with pytest.raises(DataError, match="^record 'a' has no 'translation' reference"):
        score_records([Record("a", task="ast", tgt_lang="de", pred_text="x")])
    protocols = "openasr, openasr-2025, paper"
    with pytest.raises(SpeechkitError, match=f"^unknown protocol 'x'; choose one of: {protocols}$"):
        score_records([Record("a", text="x")], protocol="x")
    with pytest.raises(DataError, match="^no records to score$"):
        score_records([])
    missing = tmp_path / "none.jsonl"
    assert main(["score", str(missing)]) == 1
    assert capsys.readouterr().err == f"speechkit: error: {missing}: no such records file\n"


def test_records_file_errors(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te', "utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: torn last line \(a killed run\?\); resume the run or"):
        read_records(path)
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: duplicate id 'a'; ids must be unique per file$"):
        read_records(path)
    path.write_text('{"id": "a", "duration": "long"}\n', "utf-8")
    with pytest.raises(DataError, match=rf"^{path}:1: 'duration' must be a number of seconds, got 'long'$"):
        read_records(path)
    path.write_text('{"id": "a"}\n{oops}\n', "utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON \(Expecting property name"):
        read_records(path)
