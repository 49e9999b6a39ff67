"""English normalizers: whisper's ``EnglishTextNormalizer`` and the Open ASR leaderboard's variants.

The word tables (British->American spellings, name variants, compounds) are data files in ``tables/``,
extracted from the pinned upstream commits by ``eval/normalizers/make_golden.py``; see each file's
``_provenance`` entry.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import ClassVar

from speechkit.scoring.normalizers.english_numbers import EnglishNumberNormalizer
from speechkit.scoring.normalizers.text_ops import drop_annotations, squeeze_spaces, strip_symbols_and_accents

WHISPER_COMMIT = "c0d2f624c09dc18e709e37c2ad90c039a4eb72a2"
OPENASR_COMMIT = "d1e99b25524814332d6868a5645e568670834cfb"
OPENASR_2024_COMMIT = "afbfabccd093e91a7b634f0a96922d0006d99318"

_WHISPER_FILLERS = ("hmm", "mm", "mhm", "mmm", "uh", "um")
_OPENASR_FILLERS = _WHISPER_FILLERS + ("ah", "aha", "ahh", "ahm", "eh", "ehehe", "em", "hm", "huh", "hum",
                                       "mhum", "uhm", "umm", "uhuh")  # fmt: skip

_WHOLE_WORDS = {
    "won't": "will not", "can't": "can not", "let's": "let us", "ain't": "aint", "y'all": "you all",
    "wanna": "want to", "gotta": "got to", "gonna": "going to", "i'ma": "i am going to",
    "imma": "i am going to", "woulda": "would have", "coulda": "could have", "shoulda": "should have",
    "ma'am": "madam",
}  # fmt: skip
# abbreviated titles; the expansion keeps a trailing space like upstream ("mr." -> "mister  .")
_TITLES = {
    "mr": "mister", "mrs": "missus", "st": "saint", "dr": "doctor", "prof": "professor", "capt": "captain",
    "gov": "governor", "ald": "alderman", "gen": "general", "sen": "senator", "rep": "representative",
    "pres": "president", "rev": "reverend", "hon": "honorable", "asst": "assistant", "assoc": "associate",
    "lt": "lieutenant", "col": "colonel", "jr": "junior", "sr": "senior", "esq": "esquire",
}  # fmt: skip
_PERFECT = {"'d been": " had been", "'s been": " has been", "'d gone": " had gone", "'s gone": " has gone",
            "'d done": " had done", "'s got": " has got"}  # fmt: skip
_CLITICS_BEFORE_S = {"n't": " not", "'re": " are"}
_CLITICS_AFTER_S = {"'d": " would", "'ll": " will", "'t": " not", "'ve": " have", "'m": " am"}
# the leaderboard expands "'s" only after these words (elsewhere it is usually a possessive)
_IS_HOSTS = "it|he|she|what|that|who|here|there|how|when|where|why|this"

_SPACE_APOSTROPHE = re.compile(r"\s+'")
_DIGIT_COMMA = re.compile(r"(\d),(\d)")
_SENTENCE_PERIOD = re.compile(r"\.([^0-9]|$)")
_LOOSE_CURRENCY = re.compile(r"[.$¢€£]([^0-9])")
_LOOSE_PERCENT = re.compile(r"([^0-9])%")
_LOOSE_SYMBOL = re.compile(r"[.$¢€£%]")
_TWO_SINGLES = re.compile(r"(?<!\S)\w\s+\w(?!\S)")  # \w covers every isalnum() character


def _rules(s_rule: tuple[str, str, str]) -> list[tuple[str, re.Pattern[str], str]]:
    """Contraction rules in upstream's order, as (literal every match contains, pattern, replacement).

    The literal lets a rule be skipped with a substring test, which is what makes scoring 100k records
    fast; ``s_rule`` is the one rule that differs between variants.
    """
    rules = [(k, rf"\b{re.escape(k)}\b", v) for k, v in _WHOLE_WORDS.items()]
    rules += [(k, rf"\b{k}\b", v + " ") for k, v in _TITLES.items()]
    rules += [(k, rf"{k}\b", v) for k, v in _PERFECT.items()]
    rules += [(k, rf"{k}\b", v) for k, v in _CLITICS_BEFORE_S.items()]
    rules.append(s_rule)
    rules += [(k, rf"{k}\b", v) for k, v in _CLITICS_AFTER_S.items()]
    return [(literal, re.compile(p), r) for literal, p, r in rules]


@cache
def load_table(name: str) -> dict:
    """A JSON word table shipped in ``speechkit/scoring/normalizers/tables/`` (``_provenance`` removed)."""
    text = resources.files("speechkit.scoring.normalizers").joinpath("tables", name).read_text("utf-8")
    table = json.loads(text)
    table.pop("_provenance", None)
    return table


def _map_words(text: str, mapping: dict[str, str]) -> str:
    return " ".join([mapping.get(word, word) for word in text.split()])


class WhisperEnglishNormalizer:
    """whisper's ``EnglishTextNormalizer``: the standard English WER normalizer.

    Lowercases; removes bracketed asides and fillers; expands contractions and titles; strips symbols and
    accents; spells numbers as digits; maps British to American spelling. Provenance: openai/whisper
    c0d2f62 ``whisper/normalizers/english.py`` and ``english.json``.
    """

    name: ClassVar[str] = "whisper-english"
    version: ClassVar[str] = "1"
    upstream: ClassVar[str] = f"openai/whisper@{WHISPER_COMMIT}"
    _spelling_table: ClassVar[str] = "whisper_english_spelling.json"

    def __init__(self) -> None:
        self._fillers = re.compile(rf"\b({'|'.join(self._filler_words())})\b")
        self._rules = _rules(self._s_rule())
        self._numbers = EnglishNumberNormalizer()
        self._spelling = load_table(self._spelling_table)

    def _filler_words(self) -> tuple[str, ...]:
        return _WHISPER_FILLERS

    def _s_rule(self) -> tuple[str, str, str]:
        return ("'s", r"'s\b", " is")

    def _before_numbers(self, text: str) -> str:
        return text

    def _after_spelling(self, text: str) -> str:
        return text

    def __call__(self, text: str) -> str:
        # rewrites are skipped when the characters they need are absent (same result, faster)
        text = text.lower()
        if "<" in text or "[" in text or "(" in text:
            text = drop_annotations(text)
        text = self._fillers.sub("", text)
        if "'" in text:
            text = _SPACE_APOSTROPHE.sub("'", text)
        for literal, pattern, replacement in self._rules:
            if literal in text:
                text = pattern.sub(replacement, text)
        if "," in text:
            text = _DIGIT_COMMA.sub(r"\1\2", text)
        if "." in text:
            text = _SENTENCE_PERIOD.sub(r" \1", text)
        text = strip_symbols_and_accents(text, keep=".%$¢€£")  # symbols that belong to numbers stay
        text = self._numbers(self._before_numbers(text))
        text = self._after_spelling(_map_words(text, self._spelling))
        # currency/percent symbols that did not end up attached to a number go
        if _LOOSE_SYMBOL.search(text):
            text = _LOOSE_PERCENT.sub(r"\1 ", _LOOSE_CURRENCY.sub(r" \1", text))
        return squeeze_spaces(text)


class OpenAsrEnglish2024Normalizer(WhisperEnglishNormalizer):
    """The leaderboard's English normalizer from June 2024 to March 2026 (the Phi-4 paper's era).

    Identical to whisper's except one spelling entry, ``mm`` -> ``hmm`` (so ``"10mm"`` scores as
    ``"10 hmm"``). Provenance: huggingface/open_asr_leaderboard afbfabc ``normalizer/``.
    """

    name: ClassVar[str] = "openasr-english"
    version: ClassVar[str] = "1"
    upstream: ClassVar[str] = f"huggingface/open_asr_leaderboard@{OPENASR_2024_COMMIT}"
    _spelling_table: ClassVar[str] = "openasr_2024_english_spelling.json"


class OpenAsrEnglishNormalizer(WhisperEnglishNormalizer):
    """The current leaderboard English normalizer (2026): whisper's plus the leaderboard's own tables.

    Adds fillers (``ah``, ``eh``, ``huh``, ...), expands ``'s`` only after pronoun-like words, joins listed
    compounds (``wi fi`` -> ``wifi``), uses its own spelling table, folds name variants (``jon`` ->
    ``john``) and joins runs of single letters or digits (``b b c`` -> ``bbc``; a run that contains
    ``a`` or ``i`` must be 3 long). Provenance: huggingface/open_asr_leaderboard d1e99b2 ``normalizer/``.
    """

    name: ClassVar[str] = "openasr-english"
    version: ClassVar[str] = "2"
    upstream: ClassVar[str] = f"huggingface/open_asr_leaderboard@{OPENASR_COMMIT}"
    _spelling_table: ClassVar[str] = "openasr_english_spelling.json"

    def __init__(self) -> None:
        super().__init__()
        self._names = load_table("openasr_english_names.json")
        compounds = load_table("openasr_english_compounds.json")["patterns"]
        self._compounds = [(re.compile(p), r) for p, r in compounds]
        # one search decides whether any compound rule can fire (none can after none did)
        self._any_compound = re.compile("|".join(f"(?:{p})" for p, _ in compounds))

    def _filler_words(self) -> tuple[str, ...]:
        return _OPENASR_FILLERS

    def _s_rule(self) -> tuple[str, str, str]:
        return ("'s", rf"\b({_IS_HOSTS})'s\b", r"\1 is")

    def _before_numbers(self, text: str) -> str:
        if self._any_compound.search(text):
            for pattern, replacement in self._compounds:
                text = pattern.sub(replacement, text)
        return text

    def _after_spelling(self, text: str) -> str:
        return join_single_characters(_map_words(text, self._names))


def join_single_characters(text: str) -> str:
    """Join runs of one-character alphanumeric words: ``"b b c"`` -> ``"bbc"``, ``"5 g"`` -> ``"5g"``."""
    if not _TWO_SINGLES.search(text):  # no two one-character words in a row: nothing to join
        return " ".join(text.split())
    out: list[str] = []
    run: list[str] = []

    def close_run() -> None:
        # "a" and "i" are ordinary words, so a run holding one needs 3 tokens to count as an acronym
        needed = 3 if ("a" in run or "i" in run) else 2
        out.extend(["".join(run)] if len(run) >= needed else run)
        run.clear()

    for word in text.split():
        if len(word) == 1 and word.isalnum():
            run.append(word)
        else:
            close_run()
            out.append(word)
    close_run()
    return " ".join(out)
