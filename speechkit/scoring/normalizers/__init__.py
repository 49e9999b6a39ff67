"""Versioned text normalizers, applied only when scoring (records keep raw text).

Every normalizer is a callable ``str -> str`` with class attributes ``name``, ``version`` and
``upstream`` (the code it reproduces, pinned to a commit). Ask for one by ``"name"`` (latest version)
or ``"name@version"``:

==========================  =====================================================================
``basic@1``                 whisper ``BasicTextNormalizer`` (multilingual; accents kept)
``whisper-english@1``       whisper ``EnglishTextNormalizer``
``openasr-english@1``       Open ASR leaderboard 2024-06 .. 2026-03 (whisper + ``mm``->``hmm``)
``openasr-english@2``       Open ASR leaderboard 2026 (own fillers, compounds, names, acronyms)
``openasr-multilingual@1``  leaderboard multilingual normalizer; with ``lang``, numbers spelled out
==========================  =====================================================================
"""

from __future__ import annotations

from typing import Protocol

from speechkit.errors import SpeechkitError
from speechkit.scoring.normalizers.basic import BasicNormalizer, OpenAsrMultilingualNormalizer
from speechkit.scoring.normalizers.english import (
    OpenAsrEnglish2024Normalizer,
    OpenAsrEnglishNormalizer,
    WhisperEnglishNormalizer,
)

__all__ = ["Normalizer", "get_normalizer", "NORMALIZERS", "normalizer_id"]


class Normalizer(Protocol):
    name: str
    version: str
    upstream: str

    def __call__(self, text: str) -> str: ...


_CLASSES = (BasicNormalizer, WhisperEnglishNormalizer, OpenAsrEnglish2024Normalizer, OpenAsrEnglishNormalizer,
            OpenAsrMultilingualNormalizer)  # fmt: skip
NORMALIZERS: dict[str, type] = {f"{c.name}@{c.version}": c for c in _CLASSES}
_LATEST: dict[str, str] = {}
for _key in NORMALIZERS:  # later versions come later in _CLASSES
    _LATEST[_key.split("@")[0]] = _key


def normalizer_id(normalizer: Normalizer) -> str:
    """``name@version`` of a normalizer, as recorded in scores and metadata."""
    return f"{normalizer.name}@{normalizer.version}"


def get_normalizer(spec: str, lang: str | None = None) -> Normalizer:
    """Build the normalizer named ``spec`` (``"name"`` or ``"name@version"``).

    ``lang`` (ISO 639-1) is used by ``openasr-multilingual`` to spell out numbers; others ignore it.
    """
    key = _LATEST.get(spec, spec)
    cls = NORMALIZERS.get(key)
    if cls is None:
        known = ", ".join(sorted(NORMALIZERS))
        raise SpeechkitError(f"unknown normalizer {spec!r}; choose one of: {known}")
    return cls(lang=lang) if cls is OpenAsrMultilingualNormalizer else cls()
