"""Periodic dev evaluation of the model being trained: greedy decoding, then ``speechkit.scoring``."""

from __future__ import annotations

import torch

from speechkit.audio import LogMelFrontend, load_audio
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import default_max_new_tokens
from speechkit.model.speech_model import SpeechModel
from speechkit.scoring import Record, score_records
from speechkit.text.prompts import PromptSpec, Task, encode_prompt
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
            for row, gen in zip(members, gens, strict=True):
                records.append(Record(
                    id=row.id, audio_filepath=str(row.audio), duration=row.duration, task=task.value,
                    src_lang=row.src_lang, tgt_lang=target, text=row.text, translation=row.translation,
                    pred_text=tokenizer.decode(gen.tokens).strip(),
                ))  # fmt: skip
    return records


def evaluate_dev(model: SpeechModel, tokenizer: Tokenizer, rows: list[Row], tasks: tuple[Task, ...]) -> dict:
    """Scores per task and language/pair: ``{"asr": {"en": 12.3, ...}, "ast": {"de-en": 20.1, ...}}``.

    Runs in fp32 eval mode with the adapter as the stage left it; restores training mode after.
    """
    was_training = model.training
    model.eval()
    out = {}
    try:
        with torch.autocast(model.decoder.embed_tokens.weight.device.type, enabled=False):
            for task in tasks:
                score = score_records(decode_records(model, tokenizer, rows, task), protocol="paper")
                out[task.value] = {k: round(g.score, 2) for k, g in score.per_lang.items()}
    finally:
        model.train(was_training)
    return out
