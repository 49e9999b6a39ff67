"""The unit every reader yields: one recording with its references and where its audio comes from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from speechkit.audio import Waveform, load_audio
from speechkit.errors import DataError

# corpus language codes -> the ISO 639-1 codes records and scoring use
_ISO = {"cmn": "zh", "zh-cn": "zh", "zh-tw": "zh", "zh-hk": "zh", "yue": "zh", "cmn_hans": "zh"}


def iso_lang(code: str) -> str:
    """``de_de`` / ``cmn_hans_cn`` / ``zh-CN`` / ``pt-BR`` -> ``de`` / ``zh`` / ``zh`` / ``pt``."""
    low = code.lower()
    if low in _ISO:
        return _ISO[low]
    head = low.replace("-", "_").split("_")[0]
    return _ISO.get(head, head)


@dataclass(frozen=True)
class Utterance:
    """One recording to decode.

    Attributes:
        id: unique key of the recording within its set (FLEURS: ``<lang_code>/<file_name>``).
        audio: a file path, or the encoded bytes of the file (FLEURS tar members, parquet cells).
        audio_filepath: a printable origin for records (``archive.tar.gz#member`` for bytes).
        text: reference transcript (raw, as the corpus has it).
        src_lang: ISO 639-1 code of the speech.
        translation / tgt_lang: reference translation and its language, for translation sets.
        duration: seconds, when the corpus states it (FLEURS ``num_samples``); else measured on load.
    """

    id: str
    audio: Path | bytes
    audio_filepath: str
    text: str
    src_lang: str
    translation: str | None = None
    tgt_lang: str | None = None
    duration: float | None = None

    def load(self) -> Waveform:
        """Decode the audio as mono float32 at 16 kHz (``speechkit.audio.SAMPLE_RATE``)."""
        return load_audio(self.audio, keep_8k=False)


def tsv_rows(path: Path, n_fields: int, header: bool) -> Iterator[tuple[str, list[str]]]:
    """``(file:line, fields)`` per row of a tab-separated file, unquoted, as the corpora write them.

    With ``header`` the first line is checked to have ``n_fields`` names and skipped.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found; check --data-root and the corpus layout")
    with path.open("r", encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < n_fields:
                raise DataError(f"{path}:{number}: expected {n_fields} tab-separated fields, "
                                f"got {len(fields)}")
            if header and number == 1:
                continue
            yield f"{path}:{number}", fields


def header_index(path: Path, wanted: tuple[str, ...]) -> dict[str, int]:
    """Column positions of ``wanted`` names in the header line of a TSV file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check --data-root and the corpus layout")
    with path.open("r", encoding="utf-8") as f:
        names = f.readline().rstrip("\r\n").split("\t")
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)} (has {', '.join(names)})")
    return {w: names.index(w) for w in wanted}
