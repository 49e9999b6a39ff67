"""Common Voice releases: ``cv-corpus-15.0-<date>/<locale>/{clips/*.mp3, test.tsv, dev.tsv, ...}``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from speechkit.data.utterance import Utterance, header_index, iso_lang, tsv_rows
from speechkit.errors import DataError


def find_commonvoice(data_root: str | Path, version: str = "15.0") -> Path:
    """The ``cv-corpus-<version>-*`` directory under ``data_root`` (or ``data_root/commonvoice``)."""
    root = Path(data_root)
    for base in (root, root / "commonvoice"):
        found = sorted(base.glob(f"cv-corpus-{version}-*"))
        if found:
            return found[-1]
    raise DataError(f"{root}: no cv-corpus-{version}-* directory; unpack the Common Voice release there")


def read_commonvoice(release: str | Path, locale: str, split: str = "test") -> Iterator[Utterance]:
    """Utterances of one locale's split, in TSV order.

    Args:
        release: the ``cv-corpus-15.0-*`` directory.
        locale: Common Voice locale (``de``, ``zh-CN``, ...).
        split: TSV name without extension (``test``, ``dev``, ``train``, ``validated``, ...).

    The key is the clip file name (unique per recording); the reference is the ``sentence`` column.
    """
    folder = Path(release) / locale
    tsv = folder / f"{split}.tsv"
    columns = header_index(tsv, ("path", "sentence"))
    width = max(columns.values()) + 1
    for where, fields in tsv_rows(tsv, width, header=True):
        clip = fields[columns["path"]]
        if not clip:
            raise DataError(f"{where}: empty 'path' field")
        audio = folder / "clips" / clip
        if not audio.is_file():
            raise DataError(f"{where}: clip {clip} not found in {folder / 'clips'}")
        yield Utterance(clip, audio, str(audio), fields[columns["sentence"]], iso_lang(locale))
