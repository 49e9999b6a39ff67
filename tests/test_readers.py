"""Readers on fixture corpora in each published layout: keys, texts, 16 kHz audio, file:line errors."""

import json

import pytest

from speechkit.audio import SAMPLE_RATE
from speechkit.data import (
    find_commonvoice,
    read_commonvoice,
    read_covost,
    read_fleurs,
    read_manifest,
    read_openasr_parquet,
)
from speechkit.errors import DataError
from speechkit.testing.corpora import (
    has_speech_synthesis,
    write_commonvoice,
    write_covost,
    write_fleurs,
    write_manifest,
    write_openasr_parquet,
)


def _check_audio(utt, duration_from_audio=True):
    wave = utt.load()
    assert wave.sample_rate == SAMPLE_RATE and wave.samples.ndim == 1
    if has_speech_synthesis() and utt.text:  # the row's text, spoken by espeak-ng: longer than a 0.3 s tone
        assert 0.5 * SAMPLE_RATE < len(wave.samples) < 5 * SAMPLE_RATE
    else:
        assert 0.25 * SAMPLE_RATE < len(wave.samples) < 0.4 * SAMPLE_RATE
    if duration_from_audio and utt.duration is not None:  # FLEURS num_samples, written from the audio
        assert utt.duration == pytest.approx(len(wave.samples) / SAMPLE_RATE, abs=0.01)


def test_commonvoice(tmp_path):
    write_commonvoice(tmp_path, "zh-CN", [("a.mp3", "你好，世界。"), ("b.mp3", "今天很好")])
    release = find_commonvoice(tmp_path)
    utts = list(read_commonvoice(release, "zh-CN"))
    assert [(u.id, u.text, u.src_lang) for u in utts] == [
        ("a.mp3", "你好，世界。", "zh"),
        ("b.mp3", "今天很好", "zh"),
    ]
    _check_audio(utts[0])


def test_commonvoice_errors(tmp_path):
    release = write_commonvoice(tmp_path, "de", [("a.mp3", "Hallo")])
    tsv = release / "de" / "test.tsv"
    tsv.write_text(tsv.read_text() + "c9\tmissing.mp3\tWeg\t2\t0\t\t\t\t\tde\t\n", "utf-8")
    with pytest.raises(
        DataError, match=rf"^{tsv}:3: clip missing.mp3 not found in {release / 'de' / 'clips'}$"
    ):
        list(read_commonvoice(release, "de"))
    tsv.write_text(tsv.read_text().splitlines()[0] + "\nc1\ta.mp3\n", "utf-8")
    with pytest.raises(DataError, match=rf"^{tsv}:2: expected 3 tab-separated fields, got 2$"):
        list(read_commonvoice(release, "de"))
    with pytest.raises(DataError, match=r"no cv-corpus-15.0-\* directory"):
        find_commonvoice(tmp_path / "nowhere")


def test_fleurs_shared_sentence_id_and_translation(tmp_path):
    write_fleurs(tmp_path, "de_de", [(7, "1.wav", "Guten Morgen."), (7, "2.wav", "Guten Morgen."),
                                     (9, "3.wav", "Gute Nacht.")])  # fmt: skip
    write_fleurs(tmp_path, "en_us", [(7, "10.wav", "Good morning."), (8, "11.wav", "Hello.")])
    utts = list(read_fleurs(tmp_path, "de_de"))
    assert [u.id for u in utts] == ["de_de/1.wav", "de_de/2.wav", "de_de/3.wav"]
    assert [u.text for u in utts] == ["Guten Morgen.", "Guten Morgen.", "Gute Nacht."]
    _check_audio(utts[0])
    _check_audio(utts[1])
    pairs = list(read_fleurs(tmp_path, "de_de", translate_to="en_us"))  # sentence 9 has no English
    assert [(u.id, u.translation, u.tgt_lang) for u in pairs] == [
        ("de_de/1.wav", "Good morning.", "en"), ("de_de/2.wav", "Good morning.", "en")]  # fmt: skip


def test_fleurs_errors(tmp_path):
    write_fleurs(tmp_path, "fr_fr", [(1, "1.wav", "Bonjour.")])
    tsv = tmp_path / "data/fr_fr/test.tsv"
    tsv.write_text(tsv.read_text() + "x\t2.wav\ta\ta\ta\t10\tMALE\n", "utf-8")
    with pytest.raises(DataError, match=rf"^{tsv}:2: sentence id 'x' is not a number"):
        list(read_fleurs(tmp_path, "fr_fr"))
    tsv.write_text(tsv.read_text().splitlines()[0] + "\n2\t2.wav\ta\ta\ta\t10\tMALE\n", "utf-8")
    with pytest.raises(
        DataError, match=rf"^{tsv}:2: audio 2.wav is not in .*test.tar.gz \(1 files missing\)$"
    ):
        list(read_fleurs(tmp_path, "fr_fr"))


def test_covost(tmp_path):
    tsv_dir, clips = write_covost(
        tmp_path, "ja", "en", [("j1.mp3", "こんにちは", "Hello"), ("j2.mp3", "はい", "Yes")]
    )
    utts = list(read_covost(tsv_dir, clips, "ja", "en"))
    assert [(u.id, u.text, u.translation, u.src_lang, u.tgt_lang) for u in utts] == [
        ("j1.mp3", "こんにちは", "Hello", "ja", "en"), ("j2.mp3", "はい", "Yes", "ja", "en")]  # fmt: skip
    _check_audio(utts[0])
    tsv = tsv_dir / "covost_v2.ja_en.test.tsv"
    tsv.write_text("path\tsentence\tclient_id\n", "utf-8")
    with pytest.raises(DataError, match=rf"^{tsv}:1: header lacks column\(s\) translation"):
        list(read_covost(tsv_dir, clips, "ja", "en"))


def test_openasr_parquet(tmp_path):
    shard = write_openasr_parquet(
        tmp_path / "ls" / "test-00000.parquet", [("1089-1", "HELLO"), ("1089-2", "WORLD")]
    )
    utts = list(read_openasr_parquet(shard.parent))
    assert [(u.id, u.text, u.src_lang) for u in utts] == [
        ("1089-1", "HELLO", "en"),
        ("1089-2", "WORLD", "en"),
    ]
    _check_audio(utts[1])
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"audio": [{"bytes": b"", "path": "x"}], "text": ["t"]}), bad)
    with pytest.raises(DataError, match=rf"^{bad}:row 1: 'audio' has no bytes"):
        list(read_openasr_parquet(bad))


def test_manifest(tmp_path):
    rows = [
        {"audio_filepath": "a.wav", "text": "hi", "source_lang": "en", "duration": 0.3},
        {"audio_filepath": "b.wav", "answer": "Hallo", "source_lang": "en", "target_lang": "de"},
    ]
    path = write_manifest(tmp_path / "m.jsonl", rows)
    utts = list(read_manifest(path))
    assert [(u.id, u.text, u.translation, u.tgt_lang) for u in utts] == [
        ("a.wav", "hi", None, None), ("b.wav", "", "Hallo", "de")]  # fmt: skip
    assert utts[0].duration == 0.3  # as the manifest states it
    _check_audio(utts[0], duration_from_audio=False)
    path.write_text(path.read_text() + json.dumps({"text": "x"}) + "\n{oops\n", "utf-8")
    with pytest.raises(DataError, match=rf"^{path}:3: missing 'audio_filepath'$"):
        list(read_manifest(path))
