"""Summarization and spoken QA over long audio: one request up to ``max_request_s`` of speech, else in parts.

A file's speech segments (non-speech is dropped, as for transcription) are grouped in time order
into parts of at most ``LongformOptions.max_request_s`` speech seconds (30 minutes by default, the
model card's limit for one request). One part: its audio is one request and its answer is the
file's. More: each part is summarized (or answered) with the speech LoRA on, then one text-only
request joins the parts' texts with the speech adapter off, so that it runs as the bare
Phi-4-mini, as the official code does for text-only input. That needs the adapter switchable:
load with ``lora="unmerged"`` (the CLI does so when a file is longer than ``--max-request``).

Every audio request is checked against the decoder's context before anything is decoded; the
text-only request is checked once the parts' texts exist. A request that cannot fit is a
``ConfigError`` naming the numbers and what to change.

Memory: one part is read at a time (segments concatenated) and decoded alone (batch 1), so at
most ``max_request_s`` of audio is held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from speechkit.audio import SAMPLE_RATE, Waveform, audio_info, num_audio_tokens, read_segment
from speechkit.audio.vad import SpeechSegment, detect_speech
from speechkit.errors import ConfigError, SpeechkitError
from speechkit.inference.generate import Generation, generate
from speechkit.inference.longform import LongformOptions, LongResult, SegmentResult
from speechkit.inference.pipeline import DecodeOptions, Pipeline, default_max_new_tokens
from speechkit.text.prompts import PromptSpec, Task, encode_prompt
from speechkit.text.tokenizer import ASSISTANT_TOKEN, END_TOKEN, USER_TOKEN

_JOIN_INSTRUCTIONS = {
    Task.SUMMARIZE: "Below are summaries of consecutive parts of one recording, in order. "
    "Write one summary of the whole recording.",
    Task.QA: "Below are answers to the same spoken request, each given from one consecutive part of a "
    "recording, in order. Combine them into one answer.",
}


def plan_parts(segments: Sequence[SpeechSegment], max_request_s: float) -> list[list[SpeechSegment]]:
    """Consecutive segments grouped greedily into parts of at most ``max_request_s`` speech seconds."""
    parts: list[list[SpeechSegment]] = []
    for segment in segments:
        if parts and sum(s.duration for s in parts[-1]) + segment.duration <= max_request_s:
            parts[-1].append(segment)
        else:
            parts.append([segment])
    return parts


def summarize_long(
    pipeline: Pipeline,
    files: Sequence[str | Path],
    spec: PromptSpec,
    options: DecodeOptions | None = None,
    longform: LongformOptions | None = None,
    *,
    language: str | None = None,
    on_result: Callable[[int, LongResult], None] | None = None,
    on_error: Callable[[int, SpeechkitError], None] | None = None,
    on_progress: Callable[[float, float], None] | None = None,
) -> list[LongResult | None]:
    """Summarize or answer (``spec.task`` SUMMARIZE or QA) each file; results in input order.

    The result's ``segments`` are the parts (their summaries or answers, with the time span of
    their speech). ``on_progress(done_s, total_s)`` counts speech seconds. Errors as
    :func:`speechkit.inference.longform.decode_long`.
    """
    if spec.task not in _JOIN_INSTRUCTIONS:
        raise ConfigError(f"summarize_long runs summarize and qa; task {spec.task.value!r} goes to decode_long")
    options, longform = options or DecodeOptions(), longform or LongformOptions()
    cap = options.max_new_tokens or default_max_new_tokens(spec.task, 0.0)
    plans: list[tuple[list[list[SpeechSegment]], float] | None] = []
    results: list[LongResult | None] = [None] * len(files)
    for i, path in enumerate(files):
        try:
            parts = plan_parts(detect_speech(path, longform.request_vad()), longform.max_request_s)
            check_audio_requests(pipeline, str(path), spec, parts, cap)
            if len(parts) > 1:
                _require_switchable(pipeline, str(path))
            plans.append((parts, audio_info(path).duration))
        except SpeechkitError as err:
            if on_error is None:
                raise
            plans.append(None)
            on_error(i, err)
    total = sum(s.duration for plan in plans if plan for part in plan[0] for s in part)
    done = 0.0
    for i, plan in enumerate(plans):
        if plan is None:
            continue
        parts, duration = plan
        try:
            results[i] = _summarize_file(pipeline, str(files[i]), parts, duration, spec, cap, language)
        except SpeechkitError as err:
            if on_error is None:
                raise
            on_error(i, err)
        done += sum(s.duration for part in parts for s in part)
        if on_progress is not None:
            on_progress(done, total)
        if results[i] is not None and on_result is not None:
            on_result(i, results[i])
    return results


def check_audio_requests(
    pipeline: Pipeline, source: str, spec: PromptSpec, parts: Sequence[Sequence[SpeechSegment]], cap: int
) -> None:
    """Raise ConfigError when a part's audio tokens, prompt and ``cap`` new tokens exceed the context."""
    context = pipeline.model.config.decoder.rope.max_position_embeddings
    prompt = len(encode_prompt(pipeline.tokenizer, spec.text(), 1)) - 1  # without the one audio token
    for part in parts:
        seconds = sum(s.duration for s in part)
        need = num_audio_tokens(round(seconds * SAMPLE_RATE)) + prompt + cap
        if need > context:
            raise ConfigError(
                f"{source}: a request of {seconds:.0f} s of speech needs {need} tokens ({cap} of them new), "
                f"beyond the model's context of {context} tokens; lower --max-request or --max-new-tokens"
            )


def _summarize_file(
    pipeline: Pipeline,
    source: str,
    parts: list[list[SpeechSegment]],
    duration: float,
    spec: PromptSpec,
    cap: int,
    language: str | None,
) -> LongResult:
    one = DecodeOptions(batch_size=1, max_new_tokens=cap)
    done = []
    for k, part in enumerate(parts):
        (r,) = pipeline.run([_read_part(source, part)], spec, one, language=language)
        done.append(SegmentResult(k, part[0].start, part[-1].end, r.text, None, None, r.tokens, r.avg_logprob, r.flags))
    flags = [f for s in done for f in s.flags]
    if len(done) > 1:
        gen = text_request(pipeline, join_prompt(spec, [s.text for s in done]), cap, source)
        text, tokens, avg = pipeline.tokenizer.decode(gen.tokens).strip(), gen.tokens, gen.avg_logprob
        if gen.stop != "stop":
            flags.insert(0, gen.stop)
    elif done:
        text, tokens, avg = done[0].text, done[0].tokens, done[0].avg_logprob
    else:  # no speech: nothing to summarize or answer
        text, tokens, avg = "", (), 0.0
    return LongResult(
        source, spec.task.value, language, None, text, None, None, tuple(tokens), avg,
        tuple(dict.fromkeys(flags)), duration, tuple(done),
    )  # fmt: skip


def _read_part(source: str, part: Sequence[SpeechSegment]) -> Waveform:
    waves = [read_segment(source, s.start, s.end) for s in part]
    return Waveform(np.concatenate([w.samples for w in waves]), waves[0].sample_rate, source)


def join_prompt(spec: PromptSpec, texts: Sequence[str]) -> str:
    """The text-only request that joins the parts' summaries (or answers) into one."""
    head = _JOIN_INSTRUCTIONS[spec.task]
    if spec.context:
        head += f" {'The request' if spec.task is Task.QA else 'Instructions'}: {spec.context.strip()}"
    body = "\n\n".join(f"Part {n}: {t.strip()}" for n, t in enumerate(texts, start=1))
    return f"{head}\n\n{body}"


def text_request(pipeline: Pipeline, text: str, cap: int, source: str) -> Generation:
    """Greedy-decode one text-only user turn with the speech adapter off (bare Phi-4-mini).

    Raises:
        ConfigError: the adapter is merged into the weights, or the request exceeds the context.
    """
    decoder = pipeline.model.decoder
    _require_switchable(pipeline, source)
    ids = pipeline.tokenizer.encode(f"{USER_TOKEN}{text}{END_TOKEN}{ASSISTANT_TOKEN}")
    context = decoder.config.rope.max_position_embeddings
    if len(ids) + cap > context:
        raise ConfigError(
            f"{source}: the parts' texts take {len(ids)} tokens, plus {cap} new tokens beyond the model's context "
            f"of {context} tokens; raise --max-request (fewer parts) or lower --max-new-tokens"
        )
    switchable = decoder.lora_state == "unmerged"
    decoder.set_lora_enabled(False)
    try:
        return generate(
            pipeline.model,
            [ids],
            None,
            max_new_tokens=[cap],
            stop_ids=pipeline.tokenizer.stop_ids,
            pad_id=pipeline.tokenizer.special.endoftext,
        )[0]
    finally:
        if switchable:
            decoder.set_lora_enabled(True)


def _require_switchable(pipeline: Pipeline, source: str) -> None:
    if pipeline.model.decoder.lora_state == "merged":
        raise ConfigError(
            f"{source}: joining the parts' texts needs the speech adapter switched off, but it is merged into "
            "the weights; load with lora='unmerged'"
        )
