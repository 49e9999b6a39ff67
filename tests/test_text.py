"""Tokenizer wrapper, prompt format (reference F) and the tiny test tokenizer."""

from __future__ import annotations

import json

import pytest

from speechkit.errors import CheckpointError, ConfigError
from speechkit.testing.tokenizer import SPECIAL_TOKENS, write_tiny_tokenizer
from speechkit.text import PromptSpec, Task, Tokenizer, encode_prompt, resolve_language, split_cot

USER, ASSISTANT, END, SYSTEM, AUDIO, EOT = 200021, 200019, 200020, 200022, 200011, 199999


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    return Tokenizer.from_dir(tok_dir)


def test_special_ids_are_the_released_ones(tok):
    s = tok.special
    ids = (s.audio, s.endoftext, s.end, s.user, s.assistant, s.system)
    assert ids == (AUDIO, EOT, END, USER, ASSISTANT, SYSTEM)
    assert tok.stop_ids == (200020, 199999)
    assert tok.token_id("<|endoftext10|>") == 200010


def test_tiny_tokenizer_is_byte_level_bpe_with_merges(tok_dir):
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE"
    assert len(spec["model"]["merges"]) >= 200
    assert {t["id"]: t["content"] for t in spec["added_tokens"]} == SPECIAL_TOKENS
    assert all(t["special"] for t in spec["added_tokens"])


@pytest.mark.parametrize(
    "text", ["Transcribe the audio clip into text.", "Bonjour, ça va ? Grüße aus München.", "日本語 <sep> x"]
)
def test_encode_decode_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(i < 199999 for i in ids)  # plain text never produces a control token
    assert tok.decode(ids) == text


def test_no_bos_and_special_strings_become_ids(tok):
    ids = tok.encode("<|user|>hi<|end|><|assistant|>")
    assert ids[0] == USER and ids[-2:] == [END, ASSISTANT]
    assert tok.decode(ids + [EOT]) == "hi"  # decode leaves special tokens out


def test_gap_ids_decode_to_nothing(tok):
    # ids between the byte-level vocabulary and the control tokens exist as model rows only
    assert tok.decode([200000, *tok.encode("ok")]) == "ok"


def test_asr_prompt_matches_the_model_card(tok):
    spec = PromptSpec(Task.ASR)
    assert spec.text() == "<|user|><|audio_1|>Transcribe the audio clip into text.<|end|><|assistant|>"
    ids = encode_prompt(tok, spec.text(), 5)
    body = tok.encode("Transcribe the audio clip into text.")
    assert ids == [USER, *[AUDIO] * 5, *body, END, ASSISTANT]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (PromptSpec("ast", language="fr"), "Translate the audio to French."),
        (PromptSpec("ast", language="GERMAN"), "Translate the audio to German."),
        (PromptSpec("ast", language="Korean"), "Translate the audio to Korean."),
        (PromptSpec("ast", language="ko"), "Translate the audio to Korean."),
        (
            PromptSpec("ast_cot", language="es"),
            "Transcribe the audio to text, and then translate the audio to Spanish. "
            "Use <sep> as a separator between the original transcript and the translation.",
        ),
        (PromptSpec("qa"), ""),
        (PromptSpec("summarize"), "Summarize the audio."),
        (
            PromptSpec("asr", context="Speaker names: Anne, Bob."),
            "Transcribe the audio clip into text. Speaker names: Anne, Bob.",
        ),
        (PromptSpec("qa", context="  Answer briefly. "), "Answer briefly."),
    ],
)
def test_task_instructions(spec, expected):
    assert spec.instruction() == expected
    assert spec.text() == f"<|user|><|audio_1|>{expected}<|end|><|assistant|>"


def test_system_turn_precedes_user_turn(tok):
    spec = PromptSpec(Task.ASR, system="You are a helpful assistant.")
    assert spec.text().startswith("<|system|>You are a helpful assistant.<|end|><|user|><|audio_1|>")
    ids = encode_prompt(tok, spec.text(), 2)
    assert ids[0] == SYSTEM and ids.count(AUDIO) == 2


def test_spoken_qa_prompt_is_audio_only(tok):
    assert encode_prompt(tok, PromptSpec(Task.QA).text(), 3) == [USER, AUDIO, AUDIO, AUDIO, END, ASSISTANT]


def test_audio_tags_expand_in_order(tok):
    ids = encode_prompt(tok, "<|user|><|audio_1|>a<|audio_2|><|end|><|assistant|>", [2, 3])
    a = tok.encode("a")
    assert ids == [USER, AUDIO, AUDIO, *a, AUDIO, AUDIO, AUDIO, END, ASSISTANT]


def test_language_codes_and_names():
    fr = resolve_language(" French ")
    assert (fr.code, fr.name, fr.speech) == ("fr", "French", True)
    assert resolve_language("PT").name == "Portuguese"
    assert resolve_language("tr").speech is False


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: resolve_language("klingon"),
            r"unknown language 'klingon'; supported speech languages: en \(English\)",
        ),
        (lambda: PromptSpec("ast"), r"task 'ast' needs a target language"),
        (lambda: PromptSpec("ast_cot", language="xx"), r"unknown language 'xx'.*pt \(Portuguese\)"),
        (lambda: PromptSpec("asr", language="fr"), r"task 'asr' takes no target language \(got 'French'\)"),
        (
            lambda: PromptSpec("dictate"),
            r"unknown task 'dictate'; choose one of: asr, ast, ast_cot, qa, summarize",
        ),
    ],
)
def test_prompt_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_audio_count_mismatch(tok):
    with pytest.raises(ConfigError, match=r"the prompt has 1 audio placeholder\(s\) but 2 audio clip\(s\)"):
        encode_prompt(tok, PromptSpec().text(), [3, 4])
    with pytest.raises(ConfigError, match="each audio clip needs at least one audio token"):
        encode_prompt(tok, PromptSpec().text(), 0)


@pytest.mark.parametrize(
    ("text", "transcript", "translation"),
    [
        ("Hello world. <sep> Bonjour le monde.", "Hello world.", "Bonjour le monde."),
        ("a<sep>b<sep>c", "a", "b<sep>c"),
        ("only a transcript", "only a transcript", None),
        ("text <sep>", "text", ""),
    ],
)
def test_split_cot(text, transcript, translation):
    out = split_cot(text)
    assert (out.transcript, out.translation) == (transcript, translation)


def test_missing_tokenizer_file(tmp_path):
    message = r"tokenizer.json: tokenizer.json not found \(is --model a checkpoint directory\?\)"
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.from_dir(tmp_path)


def test_missing_special_token_names_token_and_file(tmp_path):
    write_tiny_tokenizer(tmp_path)
    path = tmp_path / "tokenizer.json"
    spec = json.loads(path.read_text())
    del spec["model"]["vocab"]["<|user|>"]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<|user|>"]
    path.write_text(json.dumps(spec))
    message = r"tokenizer.json: required special token '<\|user\|>' is not in the vocabulary"
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.from_dir(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"generation_config.json: generation_config.json not found \(it lists the stop ids\)"),
        ("{", r"generation_config.json: not valid JSON"),
        ('{"eos_token_id": []}', r"eos_token_id must be an int or a non-empty list of ints, got \[\]"),
    ],
)
def test_generation_config_errors(tmp_path, content, message):
    write_tiny_tokenizer(tmp_path)
    gen = tmp_path / "generation_config.json"
    gen.unlink()
    if content is not None:
        gen.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.from_dir(tmp_path)


def test_single_int_eos(tmp_path):
    write_tiny_tokenizer(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 200020}')
    assert Tokenizer.from_dir(tmp_path).stop_ids == (200020,)


def test_malformed_tokenizer_json(tmp_path):
    write_tiny_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json: not a valid tokenizers file"):
        Tokenizer.from_dir(tmp_path)
