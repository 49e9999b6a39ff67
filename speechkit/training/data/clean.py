"""Sentence cleaning for synthetic speech: what espeak-ng can read, and what a transcript can match.

The help text is documentation: menu paths, code, key names, placeholders. A pair is kept only when
both sides are plain sentences, so the audio says exactly the transcript. The filter follows the one
measured in ``shared/reference/demo-data.md`` (section 1.2), with Latin letters and digits banned from
Japanese and Chinese outright (espeak-ng reads them with the wrong voice or as pinyin).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

CJK_LANGS = ("ja", "zh")
_FORBIDDEN = set("<>{}[]$%=_\\~&#|@^*")
_FORBIDDEN_SUBSTRINGS = ("...", "…", "http", "()", "www.", ".org", ".com")
# menu-path arrows are read aloud ("Rechtspfeil"); the help's plain-text menu separator is " - "
_ARROWS = re.compile(r"\s*[→⇒➔▸►›»]\s*(?=\S)")
_END_PUNCT = (".", "!", "?", "。", "！", "？")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_OR_DIGIT = re.compile(r"[A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")


@dataclass(frozen=True)
class CleanConfig:
    """Length limits of the sentence filter.

    Attributes:
        min_words / max_words: English words per sentence (about 0.35 s each when spoken).
        max_cjk_chars: characters per Japanese or Chinese sentence.
    """

    min_words: int = 4
    max_words: int = 30
    max_cjk_chars: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words} and {self.max_words}")
        if self.max_cjk_chars < 4:
            raise ValueError(f"max_cjk_chars must be at least 4, got {self.max_cjk_chars}")


def normalize(text: str, lang: str) -> str:
    """Unicode- and whitespace-normalized text with menu arrows turned into " - ".

    NFKC folds compatibility forms (no-break spaces, ligatures) for the Latin-script languages;
    Japanese and Chinese keep their full-width punctuation (NFC only), which is how they are written.
    """
    text = unicodedata.normalize("NFC" if lang in CJK_LANGS else "NFKC", text)
    text = _ARROWS.sub(" - ", text)
    return " ".join(text.split())


def is_doubled(text: str) -> bool:
    """True for a paragraph that holds its own text twice (an embedded variable rendered twice)."""
    half = len(text) // 2
    return len(text) >= 8 and text[:half].strip() == text[half:].strip()


def _plain(text: str) -> bool:
    return not (_FORBIDDEN & set(text)) and not any(s in text.lower() for s in _FORBIDDEN_SUBSTRINGS)


def english_ok(text: str, cfg: CleanConfig) -> bool:
    """A speakable English sentence: cfg word range, capitalized, sentence-final punctuation, plain text."""
    words = [w for w in text.split() if any(c.isalnum() for c in w)]  # a menu-path " - " is no word
    return (
        cfg.min_words <= len(words) <= cfg.max_words
        and text[0].isupper()
        and text.endswith(_END_PUNCT[:3])
        and _plain(text)
        and not is_doubled(text)
    )


def target_ok(text: str, en: str, lang: str, cfg: CleanConfig) -> bool:
    """A speakable translation of ``en`` into ``lang`` (an untranslated copy of the English is rejected)."""
    if text == en or not text.endswith(_END_PUNCT) or not _plain(text) or is_doubled(text):
        return False
    if lang in CJK_LANGS:
        return len(_CJK.findall(text)) >= 4 and len(text) <= cfg.max_cjk_chars and not _LATIN_OR_DIGIT.search(text)
    return len(text.split()) <= 2 * cfg.max_words
