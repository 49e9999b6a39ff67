"""Spliced sentences: new ASR utterances joined from random spans of several training sentences.

This corpus repeats itself (help pages), and a decoder trained on it learns to recognise *which*
training sentence was spoken rather than to read the audio: runs 6 and 7 wrote fluent sentences in the
right language with other content. In a spliced sentence no language model can tell where a span ends,
so the answer has to come from the audio. Spans come from train sentences only (held-out sentences stay
unheard), and a spliced utterance is transcribed only: it has no translation.

Units are words for space-separated languages, MeCab tokens for Japanese and Han characters for
Mandarin; the reading (kana, pinyin) of the joined text is made the way ``prepare`` makes it.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import defaultdict

from speechkit.training.data.config import DataConfig
from speechkit.training.data.reading import japanese_words, speak_text
from speechkit.training.data.split import voice_fields

# units per span, inclusive: a span of 1-3 words or 2-5 kana tokens / Han characters
SPAN_UNITS = {"words": (1, 3), "ja": (2, 5), "zh": (2, 5)}
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]{2,}")
_TRAILING = ".,;:!?\"'()[]"
_SENTENCE_END = {"ja": "。", "zh": "。"}


def sentence_units(text: str, lang: str) -> list[list[str]]:
    """Runs of units a span may be cut from (a span never crosses punctuation in ja/zh)."""
    if lang == "zh":
        return [list(run) for run in _HAN_RUN.findall(text)]
    if lang == "ja":
        return [words for words in japanese_words(text) if len(words) >= 2]
    words = [w.strip(_TRAILING) for w in text.split()]
    return [[w for w in words if any(c.isalpha() for c in w)]]


def join_units(units: list[str], lang: str) -> str:
    """The text of a spliced sentence: words joined by spaces and capitalised, or CJK units run together."""
    if lang in _SENTENCE_END:
        return "".join(units) + _SENTENCE_END[lang]
    text = " ".join(units)
    return text[:1].upper() + text[1:] + "."


def spliced_rows(rows: list[dict], per_lang: int, cfg: DataConfig) -> list[dict]:
    """``per_lang`` spliced ASR utterances per spoken language of ``rows`` (train manifest rows).

    Each takes as many units as a random train sentence of its language has, in spans drawn from random
    train sentences. Deterministic in ``cfg.seed``; ids are ``train-<lang>-sNNNNN``.
    """
    runs: dict[str, list[list[str]]] = defaultdict(list)
    sizes: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.get("translation") is None:  # natural sentences only
            continue
        lang = row["src_lang"]
        found = [run for run in sentence_units(row["text"], lang) if run]
        if found:
            runs[lang].extend(found)
            sizes[lang].append(sum(len(run) for run in found))
    out = []
    for lang in cfg.langs:
        if not runs[lang]:
            continue
        rng = random.Random(zlib.crc32(f"{cfg.seed}\0splice\0{lang}".encode()))
        low, high = SPAN_UNITS.get(lang, SPAN_UNITS["words"])
        made = 0
        while made < per_lang:
            want = rng.choice(sizes[lang])
            units: list[str] = []
            while len(units) < want:
                run = rng.choice(runs[lang])
                size = min(rng.randint(low, high), len(run), want - len(units))
                start = rng.randrange(len(run) - size + 1)
                units += run[start : start + size]
            text = join_units(units, lang)
            speak = speak_text(text, lang)
            if speak is None:  # a kanji without a known reading in this context
                continue
            made += 1
            uid = f"train-{lang}-s{made:05d}"
            out.append({
                "id": uid, "audio_filepath": f"audio/train/{lang}/{uid}.flac", "duration": None, "task": "asr",
                "src_lang": lang, "tgt_lang": None, "text": text, "translation": None, "speak": speak,
                **voice_fields(uid, lang, cfg.train_variants, cfg),
            })  # fmt: skip
    return out
