"""Character-level text operations shared by every normalizer.

Behaviour follows whisper's ``whisper/normalizers/basic.py`` (openai/whisper c0d2f62), which the Open ASR
leaderboard copies; the golden tables in ``tests/data/normalizers/`` pin the equivalence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache

# Letters that NFKD does not decompose into base + combining mark, folded by hand.
_EXTRA_FOLDS = {
    "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "th", "ł": "l", "Ł": "L",
}  # fmt: skip

_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")
_PARENTHESISED = re.compile(r"\(([^)]+?)\)")
_SPACES = re.compile(r"\s+")


def _fold_char(char: str, keep: str) -> str:
    if char in keep:
        return char
    folded = _EXTRA_FOLDS.get(char)
    if folded is not None:
        return folded
    category = unicodedata.category(char)
    if category == "Mn":  # combining accent left over by NFKD: drop it
        return ""
    return " " if category[0] in "MSP" else char


class _FoldTable(dict):
    """``str.translate`` table filled on first sight of each character (the rule is per character)."""

    def __init__(self, rule: Callable[[str], str]) -> None:
        super().__init__()
        self._rule = rule

    def __missing__(self, code: int) -> str:
        self[code] = out = self._rule(chr(code))
        return out


@cache
def _accent_table(keep: str) -> _FoldTable:
    return _FoldTable(lambda c: _fold_char(c, keep))


_SYMBOL_TABLE = _FoldTable(lambda c: " " if unicodedata.category(c)[0] in "MSP" else c)


def strip_symbols_and_accents(text: str, keep: str = "") -> str:
    """NFKD-decompose, drop accents, and turn marks/symbols/punctuation (except ``keep``) into spaces."""
    return unicodedata.normalize("NFKD", text).translate(_accent_table(keep))


def strip_symbols(text: str) -> str:
    """NFKC-compose and turn marks/symbols/punctuation into spaces, keeping accented letters."""
    return unicodedata.normalize("NFKC", text).translate(_SYMBOL_TABLE)


def drop_annotations(text: str) -> str:
    """Remove ``[...]``/``<...>`` tags and ``(...)`` asides (non-greedy, no nesting)."""
    return _PARENTHESISED.sub("", _BRACKETED.sub("", text))


def squeeze_spaces(text: str) -> str:
    """Collapse every whitespace run to one space (no strip: upstream keeps edge spaces)."""
    return _SPACES.sub(" ", text)
