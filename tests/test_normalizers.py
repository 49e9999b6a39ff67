"""Each normalizer reproduces its upstream on the golden tables written by eval/normalizers/make_golden.py."""

import json
from pathlib import Path

import pytest

from speechkit.errors import SpeechkitError
from speechkit.scoring.normalizers import NORMALIZERS, get_normalizer, normalizer_id
from speechkit.scoring.normalizers.english import join_single_characters

GOLDEN = Path(__file__).parent / "data" / "normalizers"


def _cases(key: str) -> list[list[str]]:
    return json.loads((GOLDEN / f"{key}.json").read_text("utf-8"))["cases"]


@pytest.mark.parametrize("key", sorted(NORMALIZERS))
def test_matches_upstream_golden_table(key):
    cases = _cases(key)
    assert len(cases) >= 50
    if key.startswith("openasr-multilingual"):
        cache: dict[str, object] = {}
        mismatches = [
            (lang, text, want, got)
            for lang, text, want in cases
            if (got := cache.setdefault(lang, get_normalizer(key, lang=lang))(text)) != want
        ]
    else:
        normalizer = get_normalizer(key)
        mismatches = [(text, want, got) for text, want in cases if (got := normalizer(text)) != want]
    assert mismatches == []


def test_golden_tables_cover_whisper_tests_and_our_sentences():
    inputs = {text for text, _ in _cases("whisper-english@1")}
    assert "two double o eight" in inputs  # from whisper's tests/test_normalizer.py
    assert "Mr. Smith and Mrs. Jones visited Dr. Brown." in inputs  # from eval/normalizers/sentences_en.txt
    assert len(inputs) > 400


def test_versions_differ_where_upstream_did():
    text = "10mm of wi-fi, b b c, it's Jon's"
    assert get_normalizer("whisper-english")(text) == "10 mm of wi fi b b c it is jon is"
    assert get_normalizer("openasr-english@1")(text) == "10 hmm of wi fi b b c it is jon is"
    assert get_normalizer("openasr-english")(text) == "10 hmm of wifi bbc it is john s"


def test_names_and_versions():
    assert normalizer_id(get_normalizer("openasr-english")) == "openasr-english@2"
    assert normalizer_id(get_normalizer("basic")) == "basic@1"
    german = get_normalizer("openasr-multilingual", lang="de")
    assert german("Es gibt 10 000 Äpfel.") == "es gibt zehntausend äpfel"


def test_unknown_normalizer_message():
    with pytest.raises(SpeechkitError, match=r"unknown normalizer 'nope'; choose one of: basic@1, "):
        get_normalizer("nope")


def test_acronym_runs():
    assert join_single_characters("a b c d") == "abcd"
    assert join_single_characters("i a m") == "iam"
    assert join_single_characters("a b") == "a b"
    assert join_single_characters("5 g network") == "5g network"
