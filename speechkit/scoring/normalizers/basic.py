"""Language-independent normalizers: whisper's basic one and the leaderboard's multilingual one."""

from __future__ import annotations

import re
from typing import ClassVar

from speechkit.errors import SpeechkitError
from speechkit.scoring.normalizers.text_ops import (
    drop_annotations,
    squeeze_spaces,
    strip_symbols,
    strip_symbols_and_accents,
)

_NOT_WORD = re.compile(r"[^\w\s]")
_SPACED_THOUSANDS = re.compile(r"(\d)\s+(\d{3})\b")
_DIGIT_RUN = re.compile(r"\d+")


class BasicNormalizer:
    """whisper's multilingual ``BasicTextNormalizer()`` (accents kept, letters not split).

    Lowercases, removes bracketed/parenthesised asides, replaces punctuation and symbols by spaces and
    collapses whitespace. Provenance: openai/whisper c0d2f62 ``whisper/normalizers/basic.py``.
    """

    name: ClassVar[str] = "basic"
    version: ClassVar[str] = "1"
    upstream: ClassVar[str] = "openai/whisper@c0d2f624c09dc18e709e37c2ad90c039a4eb72a2"

    def __init__(self, remove_diacritics: bool = False) -> None:
        self._clean = strip_symbols_and_accents if remove_diacritics else strip_symbols

    def __call__(self, text: str) -> str:
        text = drop_annotations(text.lower())
        return squeeze_spaces(self._clean(text).lower())


class OpenAsrMultilingualNormalizer:
    """The Open ASR leaderboard's ``MultilingualNormalizer(remove_diacritics=False)``.

    Like :class:`BasicNormalizer` but also deletes non-word characters and strips. Given ``lang`` (an ISO
    639-1 code such as ``de``), space-grouped thousands are joined and digit runs are spelled out with
    ``num2words`` in that language; a language num2words does not know leaves digits as they are.
    Provenance: huggingface/open_asr_leaderboard d1e99b2 ``normalizer/data_utils.py``, num2words 0.5.14.
    """

    name: ClassVar[str] = "openasr-multilingual"
    version: ClassVar[str] = "1"
    upstream: ClassVar[str] = "huggingface/open_asr_leaderboard@d1e99b25524814332d6868a5645e568670834cfb"

    def __init__(self, lang: str | None = None) -> None:
        self.lang = lang
        self._num2words = None
        if lang is not None:
            try:
                from num2words import num2words
            except ImportError as err:
                raise SpeechkitError(
                    "openasr-multilingual with a language needs num2words: pip install 'speechkit[eval]'"
                ) from err
            self._num2words = num2words

    def _spell(self, match: re.Match[str]) -> str:
        try:
            return self._num2words(int(match.group()), lang=self.lang)
        except Exception:  # upstream keeps the digits for any num2words failure (unknown language, ...)
            return match.group()

    def __call__(self, text: str) -> str:
        text = strip_symbols(drop_annotations(text.lower())).lower()
        text = squeeze_spaces(_NOT_WORD.sub("", text)).strip()
        if self._num2words is not None:
            text = _DIGIT_RUN.sub(self._spell, _SPACED_THOUSANDS.sub(r"\1\2", text))
        return text
