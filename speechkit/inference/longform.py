"""Long audio: speech segments of one or many files decoded in length-sorted batches, stitched per file.

Files of any length take this path. Each file is streamed once through the speech detector
(:func:`speechkit.audio.vad.detect_speech`), which yields padded segments of at most
``vad.max_segment_s``; only those are ever decoded, so silence, music and noise produce no text.
Segments of all files are sorted by length and decoded ``batch_size`` at a time through
:meth:`Pipeline.run` (``group_batches`` batches a call with continuous batching), each call's audio read
with :func:`read_segment` on a background thread while the one before it decodes: memory holds two calls'
audio, never a whole file or all features. Files are
scanned for speech ``PLAN_THREADS`` at a time (reading, resampling and the webrtc detector spend most
of their time outside the GIL; the silero detector scans one file at a time).

Short files: a file no longer than ``vad.max_segment_s`` is decoded as one clip from the start of
its first speech segment to the end of its last (pauses inside kept, leading and trailing
non-speech dropped), which is what the model sees best: one encoder window with all the context.
A file with no detected speech is not decoded at all and gets empty text and no segments.

The model emits no timestamps: segment times are the detector's (in seconds of the original file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from speechkit.audio import Waveform, audio_info, read_segment
from speechkit.audio.vad import SpeechSegment, VadOptions, detect_speech
from speechkit.errors import ConfigError, SpeechkitError
from speechkit.inference.pipeline import DecodeOptions, Pipeline, Result
from speechkit.text.prompts import PromptSpec, Task, resolve_language

PLAN_THREADS = 4
"""Files scanned for speech at once (the webrtc detectors)."""
DEFAULT_MAX_REQUEST_S = 1800.0
"""Audio per summarize/ask request (s): the model card's 30 minutes."""


@dataclass(frozen=True)
class LongformOptions:
    """How long audio is cut and grouped (the CLI flags ``--vad*``, ``--max-segment``, ``--pad``,
    ``--max-request`` mirror these fields). Checked on construction.

    ``max_request_s``: speech seconds in one summarize/ask request; more speech than that is
    summarized (or answered) in parts, then once more from the parts' text (see ``summary``).
    """

    vad: VadOptions = field(default_factory=VadOptions)
    max_request_s: float = DEFAULT_MAX_REQUEST_S

    def __post_init__(self) -> None:
        if self.max_request_s < 1:
            raise ConfigError(f"max_request_s={self.max_request_s} must be at least 1 s")

    def request_vad(self) -> VadOptions:
        """VAD options for summarize/ask: segments no longer than one request."""
        if self.vad.max_segment_s <= self.max_request_s:
            return self.vad
        # the split search window must stay shorter than the (now smaller) segment limit
        search = min(self.vad.split_search_s, self.max_request_s / 2)
        return replace(self.vad, max_segment_s=self.max_request_s, split_search_s=search)


@dataclass(frozen=True)
class SegmentResult:
    """One decoded segment; ``start``/``end`` in seconds of the original file (detector times)."""

    id: int
    start: float
    end: float
    text: str
    transcript: str | None
    translation: str | None
    tokens: tuple[int, ...]
    avg_logprob: float
    flags: tuple[str, ...]


@dataclass(frozen=True)
class LongResult:
    """One file's output: the task's text stitched from its segments in time order.

    ``tokens`` are the segments' ids concatenated; ``avg_logprob`` is their mean weighted by
    sampled tokens; ``flags`` is the union of the segments' flags; ``duration`` is the file's
    length in seconds (decoded or not).
    """

    source: str
    task: str
    language: str | None
    target_language: str | None
    text: str
    transcript: str | None
    translation: str | None
    tokens: tuple[int, ...]
    avg_logprob: float
    flags: tuple[str, ...]
    duration: float
    segments: tuple[SegmentResult, ...]


def plan_segments(path: str | Path, vad: VadOptions) -> tuple[list[SpeechSegment], float]:
    """The segments to decode for one file and the file's duration in seconds (rule in the module doc).

    Raises:
        AudioError: the file cannot be read.
    """
    duration = audio_info(path).duration
    segments = detect_speech(path, vad)
    if segments and duration <= vad.max_segment_s:
        segments = [SpeechSegment(segments[0].start, segments[-1].end)]
    return segments, duration


@dataclass
class _File:
    source: str
    segments: list[SpeechSegment]
    duration: float
    results: dict[int, Result] = field(default_factory=dict)
    failed: bool = False


def decode_long(
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
    """Transcribe or translate (direct or CoT) files of any length; results in input order.

    ``on_result(i, result)`` sees each file as soon as its last segment is decoded.
    ``on_progress(done_s, total_s)`` counts speech seconds decoded over all files. Without
    ``on_error`` the first failure raises; with it, a failing file is reported there once (its
    slot stays None) and the other files are still decoded.
    """
    if spec.task not in (Task.ASR, Task.AST, Task.AST_COT):
        raise ConfigError(f"decode_long runs asr, ast and ast_cot; task {spec.task.value!r} goes to summarize_long")
    options, longform = options or DecodeOptions(), longform or LongformOptions()
    states: list[_File | None] = []
    results: list[LongResult | None] = [None] * len(files)

    def fail(i: int, err: SpeechkitError) -> None:
        if on_error is None:
            raise err
        state = states[i] if i < len(states) else None
        if state is not None:
            state.failed = True
        on_error(i, err)

    def finish(i: int) -> None:
        state = states[i]
        results[i] = stitch(state, spec, language)
        if on_result is not None:
            on_result(i, results[i])

    for i, (path, plan) in enumerate(zip(files, _plan_all(files, longform.vad), strict=True)):
        if isinstance(plan, SpeechkitError):
            states.append(None)
            fail(i, plan)
        else:
            states.append(_File(str(path), *plan))
    jobs = [(i, k) for i, s in enumerate(states) if s is not None for k in range(len(s.segments))]
    jobs.sort(key=lambda job: -states[job[0]].segments[job[1]].duration)
    total = sum(states[i].segments[k].duration for i, k in jobs)
    for i, state in enumerate(states):
        if state is not None and not state.segments:
            finish(i)  # nothing to decode: empty text
    done = 0.0
    size = options.batch_size * options.group_batches  # segments per Pipeline.run (one group of batches)
    batches = [jobs[first : first + size] for first in range(0, len(jobs), size)]
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(_read_batch, batches[0], states) if batches else None
        for n, batch in enumerate(batches):
            reads = ahead.result()
            if n + 1 < len(batches):
                ahead = reader.submit(_read_batch, batches[n + 1], states)
            _decode_batch(pipeline, reads, states, spec, options, language, fail)
            _settle_batch(batch, states, results, finish)
            done += sum(states[i].segments[k].duration for i, k in batch)
            if on_progress is not None:
                on_progress(done, total)
    return results


Plan = tuple[list[SpeechSegment], float]  # a file's segments and duration (s), from plan_segments


def _plan_all(files: Sequence[str | Path], vad: VadOptions) -> list[Plan | SpeechkitError]:
    """:func:`plan_segments` of every file, in input order; a file that cannot be read gives its error."""

    def plan(path: str | Path) -> Plan | SpeechkitError:
        try:
            return plan_segments(path, vad)
        except SpeechkitError as err:
            return err

    threads = 1 if vad.method == "silero" else PLAN_THREADS  # silero's torch thread setting is process-wide
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(plan, files))


Read = tuple[int, int, Waveform | SpeechkitError]  # file index, segment index, its samples or the read's error


def _read_batch(batch: list[tuple[int, int]], states: list[_File | None]) -> list[Read]:
    """(file, segment, samples or the read's SpeechkitError) for each job of ``batch`` (a reader thread)."""
    reads = []
    for i, k in batch:
        segment = states[i].segments[k]
        try:
            reads.append((i, k, read_segment(states[i].source, segment.start, segment.end)))
        except SpeechkitError as err:
            reads.append((i, k, err))
    return reads


def _settle_batch(batch: list[tuple[int, int]], states: list[_File | None], results: list[LongResult | None],
                  finish: Callable[[int], None]) -> None:  # fmt: skip
    """Finish each file of ``batch`` whose segments are all decoded (and that did not fail)."""
    for i, _ in batch:
        state = states[i]
        if not state.failed and len(state.results) == len(state.segments) and results[i] is None:
            finish(i)


def _decode_batch(pipeline, reads: list[Read], states, spec, options, language, fail) -> None:
    waves, owners = [], []
    for i, k, samples in reads:
        if states[i].failed:  # an earlier segment of its file failed (perhaps after this one was read)
            continue
        if isinstance(samples, SpeechkitError):
            fail(i, samples)
        else:
            waves.append(samples)
            owners.append((i, k))

    def store(j: int, result: Result) -> None:
        i, k = owners[j]
        states[i].results[k] = result

    def error(j: int, err: SpeechkitError) -> None:
        i = owners[j][0]
        if not states[i].failed:
            fail(i, err)

    pipeline.run(waves, spec, options, language=language, on_result=store, on_error=error)


def stitch(state: _File, spec: PromptSpec, language: str | None) -> LongResult:
    """Join one file's segment results in time order into its ``LongResult``."""
    segments = []
    for k, segment in enumerate(state.segments):
        r = state.results[k]
        translation = r.text if spec.task is Task.AST else r.translation
        segments.append(
            SegmentResult(
                k, segment.start, segment.end, r.text, r.transcript, translation, r.tokens, r.avg_logprob, r.flags
            )
        )
    cot = spec.task is Task.AST_COT
    translations = [s.translation for s in segments if s.translation]
    # avg_logprob per segment averages every sampled token: its tokens plus the stop token
    weights = [len(s.tokens) + 1 for s in segments]
    avg = sum(s.avg_logprob * w for s, w in zip(segments, weights, strict=True)) / sum(weights) if segments else 0.0
    target = None if spec.language is None else resolve_language(spec.language).code
    return LongResult(
        source=state.source,
        task=spec.task.value,
        language=language,
        target_language=target,
        text=_join(s.text for s in segments),
        transcript=_join(s.transcript or "" for s in segments) if cot else None,
        translation=_join(translations) if cot and translations else None,
        tokens=tuple(t for s in segments for t in s.tokens),
        avg_logprob=avg,
        flags=tuple(dict.fromkeys(f for s in segments for f in s.flags)),
        duration=state.duration,
        segments=tuple(segments),
    )


def _join(texts) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())
