"""Demo data: espeak-ng synthesis driven by a fake espeak-ng binary, and the demo tokenizer."""

from __future__ import annotations

import json
import logging
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkit.errors import ConfigError
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.data.synthesize import Espeak, parse_stream_wav, phonemize_manifest, synthesize_manifest
from speechkit.training.data.tokenizer import train_tokenizer

# Stands in for espeak-ng: reads the text on stdin, writes a streamed 22.05 kHz WAV (placeholder sizes,
# like the real one) of 0.01 s per character, fails on "FAIL", writes nothing on "EMPTY", and logs
# each call so tests can count them. It checks the bundle's environment when one is expected.
FAKE = r'''#!PYTHON
import os, struct, sys, math
text = sys.stdin.buffer.read().decode()
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "|" + os.environ.get("ESPEAK_DATA_PATH", "") + "\n")
if "FAIL" in text:
    sys.stderr.write("Error: The specified espeak-ng voice does not exist.\n")
    sys.exit(1)
if "EMPTY" in text:
    sys.exit(0)
if "--ipa" in sys.argv:  # phonemes only, language-switch marks included as espeak-ng writes them
    sys.stdout.write("(en)" + text.lower().replace("g", "ɡ") + "(de)\n" + "zweite zeile\n")
    sys.exit(0)
n = int(22050 * 0.01 * len(text))
body = b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(n))
head = b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
sys.stdout.buffer.write(head + b"data" + struct.pack("<I", 0x7FFFF000) + body)
'''


def _fake_espeak(folder: Path, log: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "espeak-ng"
    exe.write_text(FAKE.replace("PYTHON", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(log))
    return exe


def _row(uid: str, speak: str) -> dict:
    return {"id": uid, "audio_filepath": f"audio/test/de/{uid}.flac", "duration": None, "task": "ast",
            "src_lang": "de", "tgt_lang": "en", "text": speak, "translation": "x", "speak": speak,
            "voice": "de+m7", "speed": 170, "pitch": 45}  # fmt: skip


def test_failed_utterances_are_logged_and_skipped_and_reruns_resume(tmp_path, monkeypatch, caplog):
    calls = tmp_path / "calls.log"
    espeak = Espeak.find(_fake_espeak(tmp_path / "bin", calls, monkeypatch))
    manifest = tmp_path / "test.jsonl"
    rows = [_row("a", "Guten Tag."), _row("b", "FAIL here"), _row("c", "EMPTY"), _row("d", "Bis morgen, bitte.")]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        report = synthesize_manifest(manifest, out, espeak, workers=2)
    assert (report.written, report.failed) == (2, 2)
    assert "b: skipped, RuntimeError: espeak-ng exited with 1: Error: The specified espeak-ng voice" in caplog.text
    assert "c: skipped, RuntimeError: espeak-ng wrote no WAV stream (0 bytes)" in caplog.text
    done = [json.loads(line) for line in report.manifest.read_text().splitlines()]
    assert [r["id"] for r in done] == ["a", "d"]
    audio, rate = sf.read(out / done[1]["audio_filepath"])
    assert rate == 16000 and audio.ndim == 1
    assert done[1]["duration"] == pytest.approx(0.01 * len("Bis morgen, bitte."), abs=2e-3)
    assert np.abs(audio).max() == pytest.approx(0.9 * 8000 / 32768, rel=0.02)  # scaled by GAIN, not clipped
    assert "-v de+m7 -s 170 -p 45" in calls.read_text()
    assert not list(out.rglob("*.tmp"))

    n_calls = len(calls.read_text().splitlines())
    again = synthesize_manifest(manifest, out, espeak, workers=1)
    assert (again.written, again.failed) == (2, 2)
    assert len(calls.read_text().splitlines()) == n_calls + 2  # only the two failures were retried
    assert again.manifest.read_text() == report.manifest.read_text()


def test_wav_output_has_the_same_samples_under_a_wav_name(tmp_path, monkeypatch):
    espeak = Espeak.find(_fake_espeak(tmp_path / "bin", tmp_path / "calls.log", monkeypatch))
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps(_row("a", "Guten Tag.")) + "\n")
    flac = synthesize_manifest(manifest, tmp_path / "flac", espeak, workers=1)
    wav = synthesize_manifest(manifest, tmp_path / "wav", espeak, workers=1, audio_format="wav")
    (row,) = [json.loads(line) for line in wav.manifest.read_text().splitlines()]
    assert row["audio_filepath"] == "audio/test/de/a.wav"
    assert sf.info(tmp_path / "wav" / row["audio_filepath"]).format == "WAV"
    (flac_row,) = [json.loads(line) for line in flac.manifest.read_text().splitlines()]
    assert row["duration"] == flac_row["duration"]
    np.testing.assert_array_equal(sf.read(tmp_path / "wav" / row["audio_filepath"], dtype="int16")[0],
                                  sf.read(tmp_path / "flac" / flac_row["audio_filepath"], dtype="int16")[0])
    with pytest.raises(ConfigError, match="audio format 'ogg'"):
        synthesize_manifest(manifest, tmp_path / "ogg", espeak, workers=1, audio_format="ogg")


def test_phonemize_adds_what_espeak_said_and_synthesis_keeps_it(tmp_path, monkeypatch, caplog):
    calls = tmp_path / "calls.log"
    espeak = Espeak.find(_fake_espeak(tmp_path / "bin", calls, monkeypatch))
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in (_row("a", "Guten Tag."), _row("b", "FAIL here"))))
    with caplog.at_level(logging.WARNING):
        assert phonemize_manifest(manifest, espeak, workers=1) == 1
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["phonemes"] for r in rows] == ["ɡuten taɡ. zweite zeile", ""]  # marks gone, one line
    assert "b: no phonemes, RuntimeError: espeak-ng exited with 1" in caplog.text
    assert all("--ipa" in line and "-q" in line.split() for line in calls.read_text().splitlines())
    synthesize_manifest(manifest, tmp_path / "audio", espeak, workers=1)
    (done,) = [json.loads(line) for line in (tmp_path / "audio" / "test.jsonl").read_text().splitlines()]
    assert done["phonemes"] == "ɡuten taɡ. zweite zeile"


def test_bundle_folder_sets_library_and_data_paths(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    calls = tmp_path / "calls.log"
    _fake_espeak(bundle / "bin", calls, monkeypatch)
    espeak = Espeak.find(bundle)
    env = dict(espeak.env)
    assert env["ESPEAK_DATA_PATH"] == str(bundle.resolve())
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(bundle.resolve() / "lib")
    samples, rate = espeak.wav("Hallo.", "de", 170, 50)
    assert rate == 22050 and samples.dtype == np.float32
    assert calls.read_text().strip().endswith("|" + str(bundle.resolve()))


def test_espeak_lookup_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an espeak-ng bundle"):
        Espeak.find(tmp_path)
    with pytest.raises(ConfigError, match="espeak-ng not found"):
        Espeak.find(tmp_path / "no-such-espeak")


def test_parse_stream_wav_rejects_non_wav_and_stereo():
    head = b"RIFF" + struct.pack("<I", 0) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 2, 22050, 0, 4, 16)
    with pytest.raises(RuntimeError, match="2 channel"):
        parse_stream_wav(head + b"data" + struct.pack("<I", 0) + b"\x01\x00" * 4)
    with pytest.raises(RuntimeError, match="no WAV stream"):
        parse_stream_wav(b"garbage")


TEXTS = [
    "Select the cells that you want to format.", "Wählen Sie die Zellen aus, die Sie formatieren möchten.",
    "Sélectionnez les cellules à mettre en forme.", "书式を設定するセルを選択します。", "选择要设置格式的单元格。",
    "Seleccione las celdas a las que desea dar formato.", "Selecione as células que deseja formatar.",
] * 20  # fmt: skip


def test_tokenizer_special_ids_from_config_and_round_trip(tmp_path):
    special = {"<|endoftext|>": 0, "<|endoftext11|>": 7, "<|end|>": 1, "<|user|>": 2, "<|assistant|>": 3,
               "<|system|>": 4, "<|endoftext10|>": 5}  # fmt: skip
    tok = Tokenizer.from_dir(train_tokenizer(TEXTS, tmp_path, vocab_size=600, special_ids=special))
    assert (tok.special.audio, tok.special.end, tok.special.user, tok.special.endoftext) == (7, 1, 2, 0)
    assert tok.stop_ids == (1, 0)
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) <= 600
    for text in TEXTS[:7] + ["Bonjour <sep> Hello", "ünïcödé 🙂 <sep>"]:
        assert tok.decode(tok.encode(text)) == text
    prompt = tok.encode("<|user|><|endoftext11|>Transcribe the audio clip into text.<|end|><|assistant|>")
    assert prompt[:2] == [2, 7] and prompt[-2:] == [1, 3] and len(prompt) <= 12


def test_tokenizer_rejects_bad_special_ids(tmp_path):
    with pytest.raises(ConfigError, match=r"missing \['<\|endoftext11\|>'\]"):
        train_tokenizer(TEXTS, tmp_path, 600, {"<|endoftext|>": 0, "<|end|>": 1, "<|user|>": 2,
                                               "<|assistant|>": 3, "<|system|>": 4})  # fmt: skip
    with pytest.raises(ConfigError, match="distinct"):
        train_tokenizer(TEXTS, tmp_path, 600, {"<|endoftext|>": 0, "<|endoftext11|>": 0, "<|end|>": 1,
                                               "<|user|>": 2, "<|assistant|>": 3, "<|system|>": 4})  # fmt: skip
