"""Open ASR leaderboard sets as local parquet snapshots (hub layout: audio struct with bytes, text)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from speechkit.data.utterance import Utterance
from speechkit.errors import DataError, SpeechkitError

# the leaderboard's own order of preference for the transcript column
TEXT_COLUMNS = ("text", "sentence", "normalized_text", "transcript", "transcription")
ID_COLUMNS = ("id", "file_name", "segment_id", "audio_id")


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise SpeechkitError("reading parquet needs pyarrow: pip install 'speechkit[eval]'") from err
    return pq


def read_openasr_parquet(path: str | Path, lang: str = "en", batch_rows: int = 64) -> Iterator[Utterance]:
    """Utterances of one set: a parquet file, or a folder of ``*.parquet`` shards read in name order.

    Each row needs an ``audio`` struct with ``bytes`` (and optionally ``path``) and a transcript column
    (first of: text, sentence, normalized_text, transcript, transcription). Keys come from ``id`` /
    ``file_name`` when present, else ``<shard>:<row>``. Errors name ``file:row N`` (rows count from 1).
    """
    pq = _pyarrow_parquet()
    root = Path(path)
    shards = sorted(root.glob("*.parquet")) if root.is_dir() else [root]
    if not shards or not shards[0].is_file():
        raise DataError(f"{root}: no parquet files; put the set's parquet shards there")
    for shard in shards:
        names = pq.read_schema(shard).names
        text_col = next((c for c in TEXT_COLUMNS if c in names), None)
        if text_col is None or "audio" not in names:
            raise DataError(f"{shard}: needs an 'audio' column and one of {', '.join(TEXT_COLUMNS)} "
                            f"(has {', '.join(names)})")  # fmt: skip
        id_col = next((c for c in ID_COLUMNS if c in names), None)
        columns = ["audio", text_col] + ([id_col] if id_col else [])
        row = 0
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_rows, columns=columns):
            for item in batch.to_pylist():
                row += 1
                yield _utterance(shard, row, item, text_col, id_col, lang)


def _utterance(shard: Path, row: int, item: dict, text_col: str, id_col: str | None, lang: str) -> Utterance:
    where = f"{shard}:row {row}"
    audio = item["audio"]
    if not isinstance(audio, dict) or not audio.get("bytes"):
        raise DataError(f"{where}: 'audio' has no bytes (only embedded audio is supported)")
    text = item[text_col]
    if not isinstance(text, str):
        raise DataError(f"{where}: '{text_col}' is {type(text).__name__}, not text")
    key = str(item[id_col]) if id_col and item.get(id_col) is not None else f"{shard.stem}:{row}"
    origin = audio.get("path") or key
    return Utterance(key, audio["bytes"], f"{shard.name}#{origin}", text, lang)
