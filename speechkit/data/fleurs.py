"""FLEURS as on the Hugging Face hub: ``data/<lang_code>/{test.tsv, audio/test.tar.gz}``.

The TSV has no header; its columns are id, file_name, raw_transcription, transcription, characters,
num_samples, gender. ``id`` is a SENTENCE id that several speakers recorded, so utterances are keyed
``<lang_code>/<file_name>``. The reference transcript is ``raw_transcription`` (cased and punctuated, as
spoken prompts were written): normalization belongs to scoring, and BLEU is computed on raw text.
Translation references come from another language's TSV joined on the sentence ``id``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from speechkit.audio import SAMPLE_RATE
from speechkit.data.utterance import Utterance, iso_lang, tsv_rows
from speechkit.errors import DataError

FIELDS = ("id", "file_name", "raw_transcription", "transcription", "characters", "num_samples", "gender")


def _read_tsv(tsv: Path) -> dict[str, tuple[str, str, list[str]]]:
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for where, fields in tsv_rows(tsv, len(FIELDS), header=False):
        sentence_id, file_name = fields[0], fields[1]
        if not sentence_id.isdigit():
            raise DataError(f"{where}: sentence id {sentence_id!r} is not a number (is this a FLEURS TSV?)")
        if not fields[5].isdigit():
            raise DataError(f"{where}: num_samples {fields[5]!r} is not a number")
        if file_name in rows:
            raise DataError(f"{where}: file {file_name} already listed at {rows[file_name][0]}")
        rows[file_name] = (where, sentence_id, fields)
    return rows


def fleurs_sentences(fleurs_root: str | Path, lang_code: str, split: str = "test") -> dict[str, str]:
    """Sentence id -> raw_transcription of one language (the translation references of that language)."""
    tsv = Path(fleurs_root) / "data" / lang_code / f"{split}.tsv"
    out: dict[str, str] = {}
    for _where, sentence_id, fields in _read_tsv(tsv).values():
        out.setdefault(sentence_id, fields[2])
    return out


def read_fleurs(fleurs_root: str | Path, lang_code: str, split: str = "test",
                translate_to: str | None = None) -> Iterator[Utterance]:  # fmt: skip
    """Utterances of one FLEURS language, audio read straight from ``audio/<split>.tar.gz``.

    Args:
        fleurs_root: the folder holding ``data/``.
        lang_code: FLEURS code (``en_us``, ``de_de``, ``cmn_hans_cn``, ...).
        translate_to: another FLEURS code; its sentence of the same id becomes ``translation``.
            Recordings whose sentence that language lacks are skipped.

    Yields in archive order; fails if a TSV row has no audio in the archive.
    """
    folder = Path(fleurs_root) / "data" / lang_code
    tsv, archive = folder / f"{split}.tsv", folder / "audio" / f"{split}.tar.gz"
    rows = _read_tsv(tsv)
    targets = fleurs_sentences(fleurs_root, translate_to, split) if translate_to else None
    if not archive.is_file():
        raise DataError(f"{archive}: audio archive not found; download audio/{split}.tar.gz for {lang_code}")
    seen: set[str] = set()
    with tarfile.open(archive, mode="r|gz") as tar:  # a stream: one pass, no index needed
        for member in tar:
            name = Path(member.name).name
            if not member.isfile() or name not in rows:
                continue
            seen.add(name)
            _where, sentence_id, fields = rows[name]
            if targets is not None and sentence_id not in targets:
                continue
            data = tar.extractfile(member).read()
            yield Utterance(
                f"{lang_code}/{name}", data, f"{archive}#{member.name}", fields[2], iso_lang(lang_code),
                translation=None if targets is None else targets[sentence_id],
                tgt_lang=iso_lang(translate_to) if translate_to else None,
                duration=int(fields[5]) / SAMPLE_RATE,
            )  # fmt: skip
    missing = [name for name in rows if name not in seen]
    if missing:
        where = rows[missing[0]][0]
        raise DataError(f"{where}: audio {missing[0]} is not in {archive} ({len(missing)} files missing)")
