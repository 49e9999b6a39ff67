"""What espeak-ng is given to read for Japanese (kana) and Mandarin (tone-numbered pinyin).

espeak-ng 1.51's ``ja`` voice cannot read kanji (it says "Chinese letter" for each), and its ``cmn``
voice reads Han characters as English-spelled pinyin; ``cmn-latn-pinyin`` reads pinyin but guesses
polyphones one character at a time. So the text is converted once, ahead of time, and stored with the
transcript in the ``speak`` field: the synthesizing machine needs neither dictionary.

Japanese uses MeCab with IPAdic's *pronunciation* field (は→ワ, long vowels as ー), which is how the
sentence sounds; a spelling-based reading (pykakasi: は stays "ha") is worse. Both packages are in the
``train`` extra and imported lazily.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from speechkit.errors import ConfigError

_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々]")
# full-width punctuation -> what espeak pauses on; brackets and quotes carry no sound
_ZH_PUNCT = str.maketrans({"，": ",", "、": ",", "；": ",", "：": ",", "。": ".", "！": "!", "？": "?",
                           "“": None, "”": None, "‘": None, "’": None, "「": None, "」": None, "『": None,
                           "』": None, "（": None, "）": None, "《": None, "》": None, "·": " "})


@lru_cache(maxsize=1)
def _mecab() -> Callable[[str], str]:
    try:
        import ipadic
        import MeCab
    except ImportError:
        raise ConfigError("Japanese readings need MeCab and IPAdic: pip install 'speechkit[train]'") from None
    return MeCab.Tagger(ipadic.MECAB_ARGS).parse


def japanese_kana(text: str) -> str | None:
    """Katakana pronunciation of ``text`` (punctuation kept), or None if a kanji has no known reading."""
    out = []
    for line in _mecab()(text).splitlines():
        if line == "EOS" or "\t" not in line:
            continue
        surface, feature = line.split("\t", 1)
        fields = feature.split(",")
        # IPAdic features: pos x4, conjugation x2, base form, reading, pronunciation (unknown words stop at 7)
        pron = fields[8] if len(fields) > 8 and fields[8] != "*" else surface
        if _KANJI.search(pron):
            return None
        out.append(pron)
    return "".join(out)


def japanese_words(text: str) -> list[list[str]]:
    """MeCab's tokens of ``text`` (surface forms) in runs between punctuation and other symbols."""
    runs: list[list[str]] = [[]]
    for line in _mecab()(text).splitlines():
        if line == "EOS" or "\t" not in line:
            continue
        surface, feature = line.split("\t", 1)
        if feature.startswith("記号"):  # IPAdic's part of speech for symbols and punctuation
            runs.append([])
        else:
            runs[-1].append(surface)
    return [run for run in runs if run]


@lru_cache(maxsize=1)
def _pinyin() -> Callable[..., list[str]]:
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        raise ConfigError("Mandarin readings need pypinyin: pip install 'speechkit[train]'") from None
    return lambda text: lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)


def mandarin_pinyin(text: str) -> str:
    """Tone-numbered pinyin (``ni3 hao3``, neutral tone 5) with pauses at punctuation, for ``cmn-latn-pinyin``.

    Word-level conversion (pypinyin's phrase table) picks the right reading of polyphones
    (银行 → yin2 hang2), which espeak-ng's per-character reading does not.
    """
    syllables = " ".join(s.strip() for s in _pinyin()(text) if s.strip())
    syllables = syllables.translate(_ZH_PUNCT)
    return " ".join(re.sub(r"\s+([,.!?])", r"\1", syllables).split())


def speak_text(text: str, lang: str) -> str | None:
    """What espeak-ng should read for ``text`` in ``lang``; None when it cannot be read reliably."""
    if lang == "ja":
        return japanese_kana(text)
    if lang == "zh":
        return mandarin_pinyin(text)
    return text
