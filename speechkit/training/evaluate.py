"""Periodic dev evaluation of the model being trained: greedy decoding, then ``speechkit.scoring``."""

from __future__ import annotations

from pathlib import Path

import torch

from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.model.loader import LoadedModel
from speechkit.model.speech_model import SpeechModel
from speechkit.scoring import Record, score_records
from speechkit.text.prompts import PromptSpec, Task
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import Row


def dev_subset(rows: list[Row], per_lang: int) -> list[Row]:
    """The first ``per_lang`` rows of each source language (manifest order, so always the same ones)."""
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        if counts.get(row.src_lang, 0) < per_lang:
            counts[row.src_lang] = counts.get(row.src_lang, 0) + 1
            out.append(row)
    return out


def decode_records(pipeline: Pipeline, rows: list[Row], task: Task, batch_size: int = 32) -> list[Record]:
    """Decode ``rows`` with one task (AST grouped by target language) into raw scoring records."""
    groups: dict[str | None, list[Row]] = {}
    for row in rows:
        groups.setdefault(None if task is Task.ASR else row.tgt_lang, []).append(row)
    records = []
    for target, members in groups.items():
        spec = PromptSpec(task, language=target)
        results = pipeline.run([str(r.audio) for r in members], spec, DecodeOptions(batch_size=batch_size))
        for row, res in zip(members, results, strict=True):
            records.append(Record(
                id=row.id, audio_filepath=str(row.audio), duration=row.duration, task=task.value,
                src_lang=row.src_lang, tgt_lang=target, text=row.text, translation=row.translation,
                pred_text=res.text, pred_transcript=res.transcript,
            ))  # fmt: skip
    return records


def evaluate_dev(model: SpeechModel, tokenizer: Tokenizer, rows: list[Row], tasks: tuple[Task, ...]) -> dict:
    """Scores per task and language/pair: ``{"asr": {"en": 12.3, ...}, "ast": {"de-en": 20.1, ...}}``.

    Runs in fp32 eval mode with the adapter as the stage left it; restores training mode after.
    """
    was_training = model.training
    model.eval()
    config = model.config
    pipeline = Pipeline(LoadedModel(model, tokenizer, config, Path("."), "unmerged", 0.0))
    out = {}
    try:
        with torch.autocast(model.decoder.embed_tokens.weight.device.type, enabled=False):
            for task in tasks:
                score = score_records(decode_records(pipeline, rows, task), protocol="paper")
                out[task.value] = {k: round(g.score, 2) for k, g in score.per_lang.items()}
    finally:
        model.train(was_training)
    return out
