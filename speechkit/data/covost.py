"""CoVoST 2: ``covost_v2.<src>_<tgt>.<split>.tsv`` (path, sentence, translation, client_id) + CV clips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from speechkit.data.utterance import Utterance, header_index, iso_lang, tsv_rows
from speechkit.errors import DataError


def read_covost(tsv_dir: str | Path, clips_dir: str | Path, src: str, tgt: str,
                split: str = "test") -> Iterator[Utterance]:  # fmt: skip
    """Utterances of one CoVoST 2 direction.

    Args:
        tsv_dir: folder holding ``covost_v2.<src>_<tgt>.<split>.tsv`` (as produced by CoVoST's
            ``get_covost_splits.py``).
        clips_dir: the Common Voice ``clips/`` folder of the source language.
        src / tgt: CoVoST language codes (``de``, ``zh-CN``, ``ja``, ...).

    Keys are clip file names; ``sentence`` is the transcript, ``translation`` the reference translation.
    """
    tsv = Path(tsv_dir) / f"covost_v2.{src}_{tgt}.{split}.tsv"
    columns = header_index(tsv, ("path", "sentence", "translation"))
    width = max(columns.values()) + 1
    clips = Path(clips_dir)
    for where, fields in tsv_rows(tsv, width, header=True):
        clip = fields[columns["path"]]
        audio = clips / clip
        if not audio.is_file():
            raise DataError(f"{where}: clip {clip} not found in {clips}")
        yield Utterance(clip, audio, str(audio), fields[columns["sentence"]], iso_lang(src),
                        translation=fields[columns["translation"]], tgt_lang=iso_lang(tgt))  # fmt: skip
