"""Decode a set into a records file that a killed run can resume, then score it.

Records are appended and flushed per batch (:class:`~speechkit.scoring.RecordWriter`); a restarted run
repairs a torn last line, skips ids already written and decodes the rest, so each utterance ends up in
the file exactly once. Audio is decoded before the clock starts; one untimed warm-up batch runs first.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from speechkit import __version__
from speechkit.data import Utterance
from speechkit.errors import DataError
from speechkit.evaluation.recognizer import Hypothesis, Recognizer, Sample, Task
from speechkit.scoring import (
    Record,
    RecordWriter,
    ScoreResult,
    read_meta,
    read_records,
    score_records,
    write_meta,
)
from speechkit.scoring.protocols import get_protocol
from speechkit.suites import SetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetRun:
    """Outcome of one set: its records file, how many utterances this call decoded, and the score."""

    spec: SetSpec
    records: Path
    decoded: int
    score: ScoreResult | None


def _batches(items: Iterable[Utterance], size: int) -> Iterator[list[Utterance]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _record(utt: Utterance, hyp: Hypothesis, task: Task, duration: float, seconds: float) -> Record:
    return Record(
        id=utt.id, audio_filepath=utt.audio_filepath, duration=duration, time=seconds, task=task.kind,
        src_lang=utt.src_lang, tgt_lang=task.tgt_lang, text=utt.text, translation=utt.translation,
        pred_text=hyp.text, pred_transcript=hyp.transcript,
    )  # fmt: skip


def _decode(recognizer: Recognizer, samples: list[Sample], task: Task) -> list[Hypothesis]:
    hyps = recognizer.decode(samples, task)
    if len(hyps) != len(samples):
        raise RuntimeError(f"{recognizer.name} returned {len(hyps)} hypotheses for {len(samples)} samples")
    return hyps


def _meta(recognizer: Recognizer, spec: SetSpec, extra: dict) -> dict:
    protocol = get_protocol(spec.protocol)
    return {
        "set": spec.name, "reader": spec.reader, "reader_args": spec.args, "task": spec.task,
        "src_lang": spec.src_lang, "tgt_lang": spec.tgt_lang, "protocol": spec.protocol,
        "normalizers": sorted({protocol.normalizer_spec(spec.src_lang)}), "recognizer": recognizer.metadata(),
        "speechkit_version": __version__, "python": platform.python_version(), "host": platform.node(),
        **extra,
    }  # fmt: skip


# recognizer metadata that changes what is decoded: a records file is resumed only with the same values (not the
# resolved checkpoint folder or the device: a run may move to another machine)
DECODING_KEYS = ("model", "dtype", "lora", "max_new_tokens", "beam_size")


def _check_resumable(path: Path, recognizer: Recognizer) -> None:
    """Refuse to add records decoded with other settings to a records file (its ``.meta.json`` names them)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    before, now = read_meta(path).get("recognizer", {}), recognizer.metadata()
    for key in DECODING_KEYS:
        if key in before and key in now and before[key] != now[key]:
            raise DataError(
                f"{path}: its records were decoded with {key}={before[key]!r}, this run has {key}={now[key]!r}; "
                f"resume with the same options, or write to another --out"
            )


def run_set(recognizer: Recognizer, spec: SetSpec, utterances: Iterable[Utterance], out_dir: Path,
            batch_size: int = 8, limit: int | None = None, warmup: bool = True,
            group_batches: int = 1) -> SetRun:  # fmt: skip
    """Decode the utterances of ``spec`` not yet in ``out_dir/<name>.jsonl``, then score the file.

    ``limit`` keeps the first N utterances of the set (the same N on every resume). The recognizer gets
    ``batch_size * group_batches`` utterances a call (records are written after each call).
    """
    path = Path(out_dir) / f"{spec.name}.jsonl"
    task = Task(spec.task, spec.src_lang, spec.tgt_lang)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    options = {"batch_size": batch_size, "group_batches": group_batches, "limit": limit}
    _check_resumable(path, recognizer)
    write_meta(path, _meta(recognizer, spec, {**options, "started": started, "finished": None}))
    decoded = 0
    with RecordWriter(path) as writer:
        if writer.repaired_bytes:
            log.warning("%s: removed a torn last line (%d bytes) left by a killed run", path,
                        writer.repaired_bytes)
        todo = (u for u in islice(utterances, limit) if u.id not in writer.done)
        for batch in _batches(todo, batch_size * group_batches):
            samples = [Sample(u, u.load()) for u in batch]  # I/O before the clock
            if warmup:
                _decode(recognizer, samples, task)  # untimed: compilation, allocator, caches
                warmup = False
            start = time.perf_counter()
            hyps = _decode(recognizer, samples, task)
            share = (time.perf_counter() - start) / len(samples)  # the leaderboard's equal split
            durations = [len(s.waveform.samples) / s.waveform.sample_rate for s in samples]
            writer.write(_record(s.utterance, h, task, d, share)
                         for s, h, d in zip(samples, hyps, durations, strict=True))  # fmt: skip
            decoded += len(samples)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    write_meta(path, _meta(recognizer, spec, {**options, "started": started, "finished": finished}))
    records = read_records(path)
    score = score_records(records, protocol=spec.protocol) if records else None
    return SetRun(spec, path, decoded, score)
