"""Periodic dev evaluation of the model being trained: greedy decoding, then ``speechkit.scoring``."""

from __future__ import annotations

import dataclasses

import torch

from speechkit.audio import LogMelFrontend, load_audio
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import default_max_new_tokens
from speechkit.model.speech_model import SpeechModel
from speechkit.scoring import Record, score_records
from speechkit.text.prompts import PromptSpec, Task, encode_prompt
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import Row
from speechkit.training.ctc import CtcHead


def dev_subset(rows: list[Row], per_lang: int) -> list[Row]:
    """The first ``per_lang`` rows of each source language (manifest order, so always the same ones)."""
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        if counts.get(row.src_lang, 0) < per_lang:
            counts[row.src_lang] = counts.get(row.src_lang, 0) + 1
            out.append(row)
    return out


@torch.inference_mode()
def decode_records(model: SpeechModel, tokenizer: Tokenizer, rows: list[Row], task: Task,
                   batch_size: int = 32) -> list[Record]:  # fmt: skip
    """Greedy-decode ``rows`` with one task (AST grouped by target language) into raw scoring records.

    Uses the plain decoding loop rather than :class:`~speechkit.inference.pipeline.Pipeline`, whose GPU
    path captures CUDA graphs: a model whose weights change every step gains nothing from capture.
    """
    device = model.decoder.embed_tokens.weight.device
    frontend = LogMelFrontend(device)
    records = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        for target in dict.fromkeys(None if task is Task.ASR else r.tgt_lang for r in chunk):
            members = [r for r in chunk if task is Task.ASR or r.tgt_lang == target]
            waves = [load_audio(r.audio) for r in members]
            feats = frontend([w.samples for w in waves], [w.sample_rate for w in waves])
            audio = model.audio(feats.values, feats.lengths)
            text = PromptSpec(task, language=target).text()
            prompts = [encode_prompt(tokenizer, text, int(n)) for n in audio.lengths]
            caps = [default_max_new_tokens(task, w.duration) for w in waves]
            gens = generate(model, prompts, audio, max_new_tokens=caps, stop_ids=tokenizer.stop_ids,
                            pad_id=tokenizer.special.endoftext)  # fmt: skip
            decoded = [tokenizer.decode(gen.tokens) for gen in gens]
            records += [_record(row, task, target, text) for row, text in zip(members, decoded, strict=True)]
    return records


@torch.inference_mode()
def decode_ctc_records(model: SpeechModel, head: CtcHead, rows: list[Row], batch_size: int = 32) -> list[Record]:
    """Greedy CTC transcripts of ``rows`` from the training-only head (best path, repeats merged,
    blanks dropped), as ASR scoring records against what the head is taught (the transcript, or the
    reading's characters): shows whether the encoder hears before the decoder listens."""
    device = model.decoder.embed_tokens.weight.device
    frontend = LogMelFrontend(device)
    records = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        waves = [load_audio(r.audio) for r in chunk]
        feats = frontend([w.samples for w in waves], [w.sample_rate for w in waves])
        paths = head.greedy(model.audio.encoder(feats.values, feats.lengths))
        for row, path in zip(chunk, paths, strict=True):
            reference = dataclasses.replace(row, text=head.units.target_text(row.text, head.units.reading_of(row)))
            records.append(_record(reference, Task.ASR, None, head.units.decode(path)))
    return records


def _record(row: Row, task: Task, target: str | None, pred_text: str) -> Record:
    return Record(id=row.id, audio_filepath=str(row.audio), duration=row.duration, task=task.value,
                  src_lang=row.src_lang, tgt_lang=target, text=row.text, translation=row.translation,
                  pred_text=pred_text.strip())  # fmt: skip


def evaluate_dev(model: SpeechModel, tokenizer: Tokenizer, rows: list[Row], tasks: tuple[Task, ...],
                 head: CtcHead | None = None) -> dict:  # fmt: skip
    """Scores per task and language/pair: ``{"asr": {"en": 12.3, ...}, "ast": {"de-en": 20.1, ...}}``,
    plus ``"ctc"`` (greedy CTC transcripts of the training-only ``head``) when one is given.

    Runs in fp32 eval mode with the adapter as the stage left it; restores training mode after.
    """
    was_training = model.training
    model.eval()
    if head is not None:
        head.eval()
    out = {}
    try:
        with torch.autocast(model.decoder.embed_tokens.weight.device.type, enabled=False):
            for task in tasks:
                out[task.value] = _per_lang(decode_records(model, tokenizer, rows, task))
            if head is not None:
                out["ctc"] = _per_lang(decode_ctc_records(model, head, rows))
    finally:
        model.train(was_training)
        if head is not None:
            head.train(was_training)
    return out


def _per_lang(records: list[Record]) -> dict[str, float]:
    return {k: round(g.score, 2) for k, g in score_records(records, protocol="paper").per_lang.items()}
