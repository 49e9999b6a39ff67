"""JSONL manifests for user data (NeMo style): one object per line with ``audio_filepath`` and ``text``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from speechkit.data.utterance import Utterance
from speechkit.errors import DataError

_ALIASES = {"source_lang": "src_lang", "target_lang": "tgt_lang", "taskname": "task"}


def read_manifest(path: str | Path, lang: str | None = None) -> Iterator[Utterance]:
    """Utterances of a JSONL manifest.

    Each line: ``audio_filepath`` (absolute or relative to the manifest), ``text``; optional ``id``
    (default: the audio path), ``duration``, ``src_lang``/``source_lang``, ``tgt_lang``/``target_lang``,
    ``translation`` (NeMo's ``answer`` is taken as the translation when a target language is given).
    ``lang`` is the source language for lines that give none.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    seen: set[str] = set()
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            utt = _utterance(row, where, path.parent, lang)
            if utt.id in seen:
                raise DataError(f"{where}: duplicate id {utt.id!r}")
            seen.add(utt.id)
            yield utt


def _utterance(row: object, where: str, base: Path, lang: str | None) -> Utterance:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    row = {_ALIASES.get(k, k): v for k, v in row.items()}
    audio = row.get("audio_filepath")
    if not isinstance(audio, str) or not audio:
        raise DataError(f"{where}: missing 'audio_filepath'")
    audio_path = Path(audio) if Path(audio).is_absolute() else base / audio
    if not audio_path.is_file():
        raise DataError(f"{where}: audio {audio_path} not found")
    tgt = row.get("tgt_lang")
    translation = row.get("translation", row.get("answer") if tgt else None)
    text = row.get("text", "" if tgt else row.get("answer", ""))
    src = row.get("src_lang") or lang
    if not src:
        raise DataError(f"{where}: no 'src_lang'; add it or pass the manifest's language")
    duration = row.get("duration")
    return Utterance(str(row.get("id", audio)), audio_path, str(audio_path), text, src,
                     translation=translation, tgt_lang=tgt, duration=duration)  # fmt: skip
