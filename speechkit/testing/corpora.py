"""Tiny corpora in each published layout, for reader and runner tests (synthetic tones, not speech).

Every writer takes a destination folder and rows, writes the exact layout its reader expects and
returns the folder the reader takes. Audio clips are 0.3 s tones, a different pitch per clip.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from speechkit.audio import SAMPLE_RATE
from speechkit.testing.audio import sine

CLIP_S = 0.3


def _tone(index: int, sample_rate: int = SAMPLE_RATE):
    return sine(CLIP_S, 220.0 + 40.0 * index, sample_rate)


def _wav_bytes(index: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _tone(index), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_commonvoice(root: Path, locale: str, rows: Sequence[tuple[str, str]], split: str = "test") -> Path:
    """``cv-corpus-15.0-2023-09-08/<locale>/{clips/*.mp3, <split>.tsv}``; rows are (clip, sentence)."""
    release = Path(root) / "cv-corpus-15.0-2023-09-08"
    clips = release / locale / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    header = "client_id path sentence up_votes down_votes age gender accents variant locale segment"
    lines = [header.replace(" ", "\t")]
    for i, (clip, sentence) in enumerate(rows):
        sf.write(clips / clip, _tone(i, 48000), 48000, format="MP3")
        lines.append(f"c{i}\t{clip}\t{sentence}\t2\t0\t\t\t\t\t{locale}\t")
    (release / locale / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return release


def write_fleurs(root: Path, lang_code: str, rows: Sequence[tuple[int, str, str]],
                 split: str = "test") -> Path:  # fmt: skip
    """``data/<lang_code>/{<split>.tsv, audio/<split>.tar.gz}``; rows are (sentence id, file, raw text).

    Give two rows the same sentence id to model two speakers reading one sentence.
    """
    folder = Path(root) / "data" / lang_code
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    with tarfile.open(folder / "audio" / f"{split}.tar.gz", "w:gz") as tar:
        for i, (sentence_id, file_name, raw) in enumerate(rows):
            data = _wav_bytes(i)
            info = tarfile.TarInfo(f"{split}/{file_name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            n_samples = round(CLIP_S * SAMPLE_RATE)
            fields = [str(sentence_id), file_name, raw, raw.lower(), "|".join(raw), str(n_samples), "MALE"]
            lines.append("\t".join(fields))
    (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return Path(root)


def write_covost(root: Path, src: str, tgt: str, rows: Sequence[tuple[str, str, str]],
                 split: str = "test") -> tuple[Path, Path]:  # fmt: skip
    """``covost_v2.<src>_<tgt>.<split>.tsv`` and ``<src>/clips/``; rows are (clip, sentence, translation).

    Returns ``(tsv_dir, clips_dir)``.
    """
    root = Path(root)
    clips = root / src / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    lines = ["path\tsentence\ttranslation\tclient_id"]
    for i, (clip, sentence, translation) in enumerate(rows):
        sf.write(clips / clip, _tone(i, 48000), 48000, format="MP3")
        lines.append(f"{clip}\t{sentence}\t{translation}\tspk{i}")
    (root / f"covost_v2.{src}_{tgt}.{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return root, clips


def write_openasr_parquet(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """One parquet shard in the hub's layout (``id``, ``audio`` {bytes, path}, ``text``); rows (id, text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "id": [r[0] for r in rows],
        "audio": [{"bytes": _wav_bytes(i), "path": f"{r[0]}.wav"} for i, r in enumerate(rows)],
        "text": [r[1] for r in rows],
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def write_manifest(path: Path, rows: Sequence[dict]) -> Path:
    """A JSONL manifest; each row's ``audio_filepath`` (relative) gets a tone written next to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        sf.write(path.parent / row["audio_filepath"], _tone(i), SAMPLE_RATE)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path
