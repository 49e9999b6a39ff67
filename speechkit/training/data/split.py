"""Held-out split by English sentence, and one manifest row per utterance with its voice.

A group (an English sentence and its translations) goes whole into one split, so a test sentence
is never heard in training in any language. The split and every voice choice come from CRC32 of
the seed and the sentence or utterance id: deterministic, and independent of dict or file order.
Test utterances use the held-out voice variants only; dev uses the training variants (it tracks
training, test measures generalisation to unseen voices too).
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import dataclass

from speechkit.training.data.config import DataConfig
from speechkit.training.data.corpus import Group

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Split:
    """Groups per split (each group in exactly one)."""

    train: list[Group]
    dev: list[Group]
    test: list[Group]


def _key(seed: int, text: str) -> int:
    return zlib.crc32(f"{seed}\0{text}".encode())


def split_groups(groups: list[Group], cfg: DataConfig) -> Split:
    """Fill test, then dev, with groups in hash order until every language has its count; the rest is train."""
    ordered = sorted(groups, key=lambda g: (_key(cfg.seed, g.en), g.en))
    held: dict[str, list[Group]] = {"test": [], "dev": []}
    rest: list[Group] = []
    need = {"test": Counter({lang: cfg.test_per_lang for lang in cfg.langs if lang != "en"}),
            "dev": Counter({lang: cfg.dev_per_lang for lang in cfg.langs if lang != "en"})}  # fmt: skip
    for group in ordered:
        for name in ("test", "dev"):
            wanted = [lang for lang in group.texts if need[name][lang] > 0]
            if wanted:
                held[name].append(group)
                need[name].subtract(wanted)
                break
        else:
            rest.append(group)
    return Split(train=rest, dev=held["dev"], test=held["test"])


def utterance_rows(groups: list[Group], split: str, per_lang: int, cfg: DataConfig) -> list[dict]:
    """Manifest rows (records schema plus ``speak``, ``voice``, ``speed``, ``pitch``) for one split.

    Each group gives one utterance per non-English language (X speech, English translation) and one
    English utterance translated into the group's language with the fewest English utterances so far,
    which balances the en->X directions. At most ``per_lang`` utterances per spoken language.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    variants = cfg.heldout_variants if split == "test" else cfg.train_variants
    spoken: Counter[str] = Counter()
    en_targets: Counter[str] = Counter()
    rows = []
    for group in groups:
        langs = [lang for lang in cfg.langs if lang in group.texts]
        for lang in langs:
            if spoken[lang] >= per_lang:
                continue
            if lang == "en":
                targets = [t for t in langs if t != "en"]
                tgt = min(targets, key=lambda t: (en_targets[t], cfg.langs.index(t)))
                en_targets[tgt] += 1
            else:
                tgt = "en"
            spoken[lang] += 1
            uid = f"{split}-{lang}-{spoken[lang]:05d}"
            rows.append({
                "id": uid,
                "audio_filepath": f"audio/{split}/{lang}/{uid}.flac",
                "duration": None,
                "task": "ast",
                "src_lang": lang,
                "tgt_lang": tgt,
                "text": group.texts[lang],
                "translation": group.texts[tgt],
                "speak": group.speak[lang],
                **voice_fields(uid, lang, variants, cfg),
            })
    return rows


def voice_fields(uid: str, lang: str, variants: tuple[str, ...], cfg: DataConfig) -> dict:
    """The voice, speed and pitch of utterance ``uid``, drawn from ``variants`` and ``cfg``, seeded by the id."""
    rng = random.Random(_key(cfg.seed, uid))
    voice = rng.choice(cfg.voices[lang])
    variant = rng.choice(variants)
    return {
        "voice": f"{voice}+{variant}" if variant else voice,
        "speed": rng.randint(*cfg.speed_wpm),
        "pitch": rng.randint(*cfg.pitch),
    }
