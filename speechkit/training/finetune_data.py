"""Fine-tuning data: JSONL manifests in the records schema, and length-bucketed batches sharded over ranks.

A manifest row is a :class:`~speechkit.scoring.records.Record` line (NeMo aliases accepted:
``taskname``, ``source_lang``, ``target_lang``, ``answer``): ``audio_filepath`` (relative to the
manifest's folder or absolute), ``task`` (``asr`` needs ``text``; ``ast`` needs ``translation`` and
``tgt_lang``), ``src_lang`` and an optional ``duration`` (read from the file header when absent).
Every problem is reported as ``file:line: reason`` before training starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from speechkit.audio.io import audio_info
from speechkit.errors import DataError, SpeechkitError
from speechkit.scoring.records import Record, record_from_dict
from speechkit.text.prompts import Task
from speechkit.training.batches import Row, plan_batches

FINETUNE_TASKS = ("asr", "ast")


@dataclass(frozen=True)
class Example:
    """One training utterance: the row (audio, texts) and the task it trains."""

    row: Row
    task: Task


def read_examples(manifest: str | Path) -> list[Example]:
    """Every row of ``manifest`` as an :class:`Example`, checked (task, texts, audio present)."""
    path = Path(manifest)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    out, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                rec = record_from_dict(json.loads(line), where)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if rec.id in seen:
                raise DataError(f"{where}: duplicate id {rec.id!r}")
            seen.add(rec.id)
            out.append(_example(rec, path, where))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def _example(rec: Record, manifest: Path, where: str) -> Example:
    if rec.task not in FINETUNE_TASKS:
        raise DataError(f"{where}: task {rec.task!r}; fine-tuning reads {FINETUNE_TASKS}")
    if not rec.audio_filepath:
        raise DataError(f"{where}: no audio_filepath")
    if rec.task == "asr" and not rec.text.strip():
        raise DataError(f"{where}: an asr row needs a non-empty 'text'")
    if rec.task == "ast" and (not rec.translation or not rec.tgt_lang):
        raise DataError(f"{where}: an ast row needs 'translation' and 'tgt_lang'")
    audio = Path(rec.audio_filepath)
    audio = audio if audio.is_absolute() else manifest.parent / audio
    if not audio.is_file():
        raise DataError(f"{where}: audio not found: {audio}")
    duration = rec.duration
    if duration is None:
        try:
            duration = audio_info(audio).duration
        except SpeechkitError as err:
            raise DataError(f"{where}: {err}") from None
    row = Row(rec.id, audio, float(duration), rec.src_lang or "", rec.tgt_lang, rec.text, rec.translation)
    return Example(row, Task(rec.task))


def shard_plan(
    durations: list[float], budget_s: float, seed: int, epoch: int, rank: int, world: int
) -> list[list[int]]:
    """This rank's batches of an epoch: the length-bucketed plan (padded seconds <= ``budget_s``)
    dealt round-robin, cut to a multiple of ``world`` so every rank takes the same number of steps.

    Like ``DistributedSampler`` over buckets: rank r takes batches r, r + world, ... of one shared
    plan, so the union over ranks is the single-process plan (less at most ``world - 1`` batches).
    """
    plan = plan_batches(durations, budget_s, seed, epoch)
    usable = len(plan) - len(plan) % world
    if usable == 0:
        raise DataError(f"{len(plan)} batch(es) per epoch cannot feed {world} ranks; add data or lower batch_seconds")
    return plan[rank:usable:world]
