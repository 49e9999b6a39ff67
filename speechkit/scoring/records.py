"""Records: one JSON line per utterance, written by decoding and read by scoring.

Field names follow NeMo manifests and the Open ASR leaderboard's result files, so their tools read ours
and ours read theirs. Texts are raw: normalization happens only when scoring. Run metadata (model,
dataset, prompt, code version, device) lives in a sidecar ``<records>.meta.json``, never in file names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from speechkit.errors import DataError

TASKS = ("asr", "ast", "ast_cot")
# NeMo / canary manifest names accepted on input; we always write the canonical names
ALIASES = {"taskname": "task", "source_lang": "src_lang", "target_lang": "tgt_lang"}


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded utterance.

    Attributes:
        id: unique per recording within a records file.
        audio_filepath: where the audio came from (a path, or ``archive.tar.gz#member``).
        duration: audio length in seconds; ``None`` when unknown.
        time: compute seconds spent decoding this utterance (its share of the batch); ``None`` if untimed.
        task: ``asr``, ``ast`` or ``ast_cot``.
        src_lang / tgt_lang: ISO 639-1 codes (``tgt_lang`` only for translation).
        text: reference transcript; translation: reference translation.
        pred_text: raw hypothesis of the task's output (transcript for asr, translation for ast*).
        pred_transcript: the transcript part of a chain-of-thought (``ast_cot``) output.
    """

    id: str
    audio_filepath: str = ""
    duration: float | None = None
    time: float | None = None
    task: str = "asr"
    src_lang: str | None = None
    tgt_lang: str | None = None
    text: str = ""
    translation: str | None = None
    pred_text: str = ""
    pred_transcript: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


_FIELDS = {f.name for f in fields(Record)}


def record_from_dict(row: dict[str, Any], where: str) -> Record:
    """Build a :class:`Record` from a parsed line, accepting NeMo aliases; ``where`` is ``file:line``."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    row = {ALIASES.get(k, k): v for k, v in row.items()}
    if "answer" in row:  # NeMo's target text: the transcript for asr, the translation otherwise
        target = "text" if row.get("task", "asr") == "asr" else "translation"
        row.setdefault(target, row.pop("answer"))
    if "id" not in row:
        if not row.get("audio_filepath"):
            raise DataError(f"{where}: record has neither 'id' nor 'audio_filepath'; add an id")
        row["id"] = row["audio_filepath"]
    kwargs = {k: v for k, v in row.items() if k in _FIELDS}
    for key in ("text", "pred_text"):
        if kwargs.get(key) is None:
            kwargs[key] = ""
        elif not isinstance(kwargs[key], str):
            raise DataError(f"{where}: '{key}' must be a string, got {type(kwargs[key]).__name__}")
    for key in ("duration", "time"):
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DataError(f"{where}: '{key}' must be a number of seconds, got {value!r}")
    kwargs["id"] = str(kwargs["id"])
    return Record(**kwargs)


def iter_records(path: str | Path) -> Iterator[Record]:
    """Read a records (or NeMo manifest) file, failing with ``file:line: reason`` on a bad line.

    Blank lines are skipped. Ids must be unique. A last line without its newline is a torn write from a
    killed run: resuming the run repairs it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such records file")
    seen: set[str] = set()
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            where = f"{path}:{number}"
            if not line.endswith("\n") and line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{where}: torn last line (a killed run?); resume the run or delete "
                                    "the line") from None  # fmt: skip
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            record = record_from_dict(row, where)
            if record.id in seen:
                raise DataError(f"{where}: duplicate id {record.id!r}; ids must be unique per file")
            seen.add(record.id)
            yield record


def read_records(path: str | Path) -> list[Record]:
    """All records of ``path`` (see :func:`iter_records`)."""
    return list(iter_records(path))


def meta_path(records_path: str | Path) -> Path:
    """The metadata sidecar of a records file: ``<records>.meta.json``."""
    return Path(f"{records_path}.meta.json")


def write_meta(records_path: str | Path, meta: dict[str, Any]) -> Path:
    """Write run metadata next to the records (atomically: temp file then rename)."""
    target = meta_path(records_path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=1, sort_keys=True) + "\n", "utf-8")
    os.replace(tmp, target)
    return target


def read_meta(records_path: str | Path) -> dict[str, Any]:
    """Run metadata of a records file, or ``{}`` when it has no sidecar."""
    target = meta_path(records_path)
    if not target.is_file():
        return {}
    try:
        return json.loads(target.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{target}:{err.lineno}: not valid JSON ({err.msg}); delete or fix it") from None


def repair_torn_tail(path: Path) -> int:
    """Cut a trailing partial line (a write interrupted by a kill); returns the bytes removed."""
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # walk back to the last newline; records are short, so read the tail in blocks
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        return size - keep


class RecordWriter:
    """Append-only records file that survives being killed at any moment.

    Opening repairs a torn last line and loads the ids already written (``done``); each
    :meth:`write` appends whole lines and flushes them to the OS, so a SIGKILL loses at most the
    batch in flight, and a resumed run decodes exactly the utterances not yet in the file.
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_torn_tail(self.path)
        self.done: set[str] = {r.id for r in iter_records(self.path)} if self.path.exists() else set()
        self._fsync = fsync
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, records: Iterable[Record]) -> None:
        batch = [r for r in records if r.id not in self.done]
        # one write call per batch: a kill leaves whole lines plus at most one torn line
        self._file.write("".join(r.to_json() + "\n" for r in batch))
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self.done.update(r.id for r in batch)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
