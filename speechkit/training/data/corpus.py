"""Multi-way sentence groups: one English sentence with its translations, cleaned and near-deduplicated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from speechkit.training.data.clean import CleanConfig, english_ok, normalize, target_ok
from speechkit.training.data.dedup import near_duplicate_clusters
from speechkit.training.data.lohelp import HelpPair
from speechkit.training.data.reading import speak_text


@dataclass(frozen=True)
class Group:
    """An English sentence, its translations and what espeak-ng reads for each language.

    Attributes:
        en: the English sentence.
        texts: language -> sentence (English included under ``"en"``).
        speak: language -> text for the synthesizer (kana for ja, pinyin for zh, else the sentence).
    """

    en: str
    texts: dict[str, str]
    speak: dict[str, str]


def build_groups(pairs: Mapping[str, Iterable[HelpPair]], cfg: CleanConfig) -> list[Group]:
    """Group cleaned pairs by English sentence (first translation per language wins, in key order).

    ``pairs`` maps a language to its English<->X pairs. A translation whose reading cannot be made
    (a kanji MeCab does not know) is dropped; so is a translation used by an earlier English sentence,
    which would make two different targets of one audio.
    """
    groups: dict[str, dict[str, str]] = {}
    readings: dict[str, dict[str, str]] = {}
    for lang, lang_pairs in pairs.items():
        used: set[str] = set()
        for pair in lang_pairs:
            en, other = normalize(pair.en, "en"), normalize(pair.other, lang)
            if other in used or not english_ok(en, cfg) or not target_ok(other, en, lang, cfg):
                continue
            texts = groups.setdefault(en, {"en": en})
            if lang in texts:
                continue
            speak = speak_text(other, lang)
            if speak is None:
                continue
            texts[lang] = other
            used.add(other)
            readings.setdefault(en, {"en": en})[lang] = speak
    return [Group(en, texts, readings[en]) for en, texts in sorted(groups.items()) if len(texts) > 1]


def drop_near_duplicates(groups: list[Group], threshold: float) -> list[Group]:
    """One group per cluster of near-duplicate English sentences: the one with most translations
    (then the first in order), so filtering costs as few pairs as possible."""
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i].texts), groups[i].en))
    labels = near_duplicate_clusters([groups[i].en for i in order], threshold)
    return sorted((groups[order[i]] for i, label in enumerate(labels) if label == i), key=lambda g: g.en)
