"""The transcribe/translate CLI end to end on the tiny official-layout checkpoint."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import jsonschema
import pytest
import torch

from speechkit.audio import LogMelFrontend, read_segment
from speechkit.cli import main
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import jfk_path, write_audio
from speechkit.testing.corpora import has_speech_synthesis, speak
from speechkit.testing.reference import port_causal_lm
from speechkit.text.prompts import PromptSpec, Task, encode_prompt

SCHEMA = json.loads(files("speechkit.schemas").joinpath("result-v2.json").read_text())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = jfk_path()
    if path is not None:
        return str(path)
    if not has_speech_synthesis():  # the speech detector must find speech in it
        pytest.skip("neither the shared JFK clip nor espeak-ng is here")
    speech = speak("Ask not what your country can do for you.", "en-us")
    return str(write_audio(tmp_path_factory.mktemp("a") / "speech.flac", speech, 16000))


def _lines(out: str) -> list[dict]:
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    for record in records:
        jsonschema.validate(record, SCHEMA)
    return records


def test_transcribe_json_matches_port_greedy(tiny_checkpoint, clip, capsys):
    argv = ["transcribe", clip, "--model", str(tiny_checkpoint), "--format", "json", "--max-new-tokens", "24"]
    assert main(argv) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["task"] == "asr" and record["file"] == clip and record["model"] == str(tiny_checkpoint)
    # the port, fp32 with the LoRA merged by hand, decodes the same prompt greedily to the same tokens
    loaded = load_speech_model(tiny_checkpoint, dtype=torch.float32, lora="unmerged")
    official = json.loads((tiny_checkpoint / "config.json").read_text())
    port = port_causal_lm(official, loaded.model.state_dict(), lora_scale=loaded.config.speech_lora.scale, attn="sdpa")
    # a file within --max-segment is one clip from its first to its last speech (README)
    (segment,) = record["segments"]
    wave = read_segment(clip, segment["start"], segment["end"])
    feats = LogMelFrontend()([wave.samples])
    ids = torch.tensor([encode_prompt(loaded.tokenizer, PromptSpec(Task.ASR).text(), -(-int(feats.lengths[0]) // 8))])
    with torch.no_grad():
        out = port.generate(
            input_ids=ids,
            audio_input_features=feats.values,
            audio_embed_sizes=torch.tensor([(ids == 200011).sum()]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=list(loaded.tokenizer.stop_ids),
            pad_token_id=199999,
        )
    expected = out[0, ids.shape[1] :].tolist()
    if expected[-1] in loaded.tokenizer.stop_ids:
        expected.pop()
    if "repetition" in record["flags"]:  # ours cuts a loop to one copy; the port runs on
        expected = expected[: len(record["tokens"])]
    assert record["tokens"] == expected


def test_translate_cot_and_output_dir(tiny_checkpoint, clip, tmp_path, capsys):
    argv = [
        "translate",
        clip,
        "--to",
        "French",
        "--cot",
        "--model",
        str(tiny_checkpoint),
        "--format",
        "json",
        "--max-new-tokens",
        "4",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["task"] == "ast_cot" and record["target_language"] == "fr"
    assert "no_sep" in record["flags"]  # a random model emits no <sep>: reported, not hidden
    written = list((tmp_path / "out").glob("*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == record


def test_mixed_good_and_bad_files(tiny_checkpoint, clip, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF garbage")
    argv = [
        "transcribe",
        clip,
        str(bad),
        str(tmp_path / "missing.flac"),
        clip,
        "--model",
        str(tiny_checkpoint),
        "--format",
        "json",
        "--max-new-tokens",
        "3",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    records = _lines(captured.out)
    assert [r["file"] for r in records] == [clip, clip]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert "broken.wav" in errors[0] and "missing.flac" in errors[1]


def test_unknown_language_is_a_usage_error(tiny_checkpoint, clip, capsys):
    assert main(["translate", clip, "--to", "Klingon", "--model", str(tiny_checkpoint)]) == 2
    assert "unknown language 'Klingon'" in capsys.readouterr().err


def test_prompt_longer_than_context(tiny_checkpoint, clip, capsys):
    argv = ["transcribe", clip, "--model", str(tiny_checkpoint), "--max-new-tokens", "200000"]
    assert main(argv) == 1
    assert "exceeds the context of 131072 tokens" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("remove", "message"), [("config.json", "config.json not found"), ("tokenizer.json", "tokenizer.json not found")]
)
def test_model_dir_without_config_or_tokenizer(tiny_checkpoint, clip, tmp_path, capsys, remove, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    (model / remove).unlink()
    assert main(["transcribe", clip, "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_tensor(tiny_checkpoint, clip, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.mlp.down_proj.lora_B.speech.weight"]
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    assert main(["transcribe", clip, "--model", str(model)]) == 1
    assert "missing tensor 'model.layers.1.mlp.down_proj.lora_B.speech.weight'" in capsys.readouterr().err


def test_offline_hub_id_without_local_copy(clip, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["transcribe", clip, "--model", "microsoft/Phi-4-multimodal-instruct"]) == 1
    err = capsys.readouterr().err
    assert "could not download microsoft/Phi-4-multimodal-instruct" in err and "--model /path/to" in err
