"""The commit policy: LocalAgreement-n over re-decoded hypotheses, and word-time estimation.

Each re-decode of the open segment yields a hypothesis (a list of words). A word is committed when the
last n hypotheses agree on it and on every word before it (whisper_streaming's LocalAgreement; n = 2 by
default). Committed words are never retracted: later hypotheses are read after the committed count.
"""

from __future__ import annotations

from collections.abc import Sequence

from speechkit.scoring.metrics import CHARACTER_LANGS
from speechkit.streaming.records import Word


def split_units(text: str, language: str | None) -> list[str]:
    """The units the policy commits and latency counts: characters for ja/zh/ko/th, else words."""
    if language is not None and language.split("-")[0].lower() in CHARACTER_LANGS:
        return [c for c in text if not c.isspace()]
    return text.split()


def join_units(units: Sequence[str], language: str | None) -> str:
    """Inverse of :func:`split_units` (whitespace is normalized)."""
    char_lang = language is not None and language.split("-")[0].lower() in CHARACTER_LANGS
    return ("" if char_lang else " ").join(units)


class LocalAgreement:
    """LocalAgreement-n: commit the longest prefix on which the last ``n`` hypotheses agree.

    ``insert(hypothesis)`` takes the whole segment's hypothesis (committed words included, by position)
    and returns the words it newly commits. ``committed`` only ever grows until ``reset()``.
    """

    def __init__(self, n: int = 2) -> None:
        if n < 1:
            raise ValueError(f"LocalAgreement n={n} must be >= 1")
        self.n = n
        self.committed: list[str] = []
        self._recent: list[list[str]] = []  # the last n tails after the committed prefix

    def insert(self, hypothesis: Sequence[str]) -> list[str]:
        """Add one hypothesis of the open segment; returns the newly committed words (maybe none)."""
        self._recent = [*self._recent, list(hypothesis[len(self.committed) :])][-self.n :]
        if len(self._recent) < self.n:
            return []
        agreed = _common_prefix(self._recent)
        self.committed.extend(agreed)
        self._recent = [tail[len(agreed) :] for tail in self._recent]
        return agreed

    def tail(self, hypothesis: Sequence[str]) -> list[str]:
        """The uncommitted part of ``hypothesis`` (what a partial shows after the committed words)."""
        return list(hypothesis[len(self.committed) :])

    def reset(self) -> None:
        """Start a new segment."""
        self.committed = []
        self._recent = []


def _common_prefix(seqs: Sequence[Sequence[str]]) -> list[str]:
    out = []
    for items in zip(*seqs, strict=False):
        if any(item != items[0] for item in items[1:]):
            break
        out.append(items[0])
    return out


def estimate_times(units: Sequence[str], start: float, end: float, *, final: bool) -> list[Word]:
    """Spread ``units`` over ``[start, end]`` seconds in proportion to their length in characters.

    The model emits no timestamps; inside a detector-bounded stretch of speech, character count is a
    usable proxy for duration. Every word is marked ``estimated``.
    """
    if not units:
        return []
    weights = [len(u) + 1 for u in units]  # +1: the gap a word carries; keeps 1-char words visible
    total = sum(weights)
    span = max(end - start, 0.0)
    words, t = [], start
    for unit, weight in zip(units, weights, strict=True):
        step = span * weight / total
        words.append(Word(round(t, 3), round(t + step, 3), unit, final=final))
        t += step
    return words
