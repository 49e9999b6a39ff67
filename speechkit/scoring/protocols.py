"""Scoring protocols: which normalizer, which metric and which alignment a set of numbers is made with.

``openasr``       the Open ASR leaderboard as of huggingface/open_asr_leaderboard d1e99b2 (2026):
                  ``openasr-english@2`` for English, ``openasr-multilingual@1`` (numbers spelled in the
                  language) otherwise; multilingual compound joining; kaldialign with
                  ``merge_compounds=True``; WER for every language.
``openasr-2025``  the leaderboard of the Phi-4 paper's era (afbfabc, 2024-06 .. 2026-03, with TED-LIUM):
                  ``openasr-english@1`` (whisper's normalizer with the leaderboard's spelling table),
                  plain WER (jiwer's: S+D+I over reference words); ``basic`` for other languages.
``paper``         the general rule, documented as an approximation of the Phi-4 paper's internal
                  evaluation: ``whisper-english`` for English and ``basic`` elsewhere; CER for
                  zh, ja, ko, th and WER elsewhere; BLEU on raw text for translation.

Under every protocol a record whose normalized reference is empty (or the leaderboard's
"ignore time segment in scoring") is dropped, as the leaderboard drops it before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from speechkit.errors import SpeechkitError
from speechkit.scoring.metrics import CHARACTER_LANGS

IGNORED_REFERENCE = "ignore time segment in scoring"


@dataclass(frozen=True)
class Protocol:
    """How to turn records into an error rate; see the module docstring for the three protocols."""

    name: str
    english_normalizer: str
    other_normalizer: str
    merge_compounds: bool  # kaldialign merge_compounds
    join_compounds_non_english: bool  # leaderboard's difflib compound joining before alignment
    cer_for_character_langs: bool
    spell_numbers: bool  # pass the language to the normalizer (openasr-multilingual)

    def normalizer_spec(self, lang: str | None) -> str:
        return self.english_normalizer if (lang or "en") == "en" else self.other_normalizer

    def error_metric(self, lang: str | None) -> str:
        """``cer`` or ``wer`` for an ASR language."""
        return "cer" if self.cer_for_character_langs and lang in CHARACTER_LANGS else "wer"


PROTOCOLS: dict[str, Protocol] = {
    "openasr": Protocol("openasr", "openasr-english@2", "openasr-multilingual@1", True, True, False, True),
    "openasr-2025": Protocol("openasr-2025", "openasr-english@1", "basic@1", False, False, False, False),
    "paper": Protocol("paper", "whisper-english@1", "basic@1", False, False, True, False),
}
DEFAULT_PROTOCOL = "paper"


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (``openasr``, ``openasr-2025`` or ``paper``)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SpeechkitError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None
