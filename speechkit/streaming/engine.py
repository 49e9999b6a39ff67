"""The streaming engine: insert audio, process, finish. Chunked re-decoding with LocalAgreement commits.

The open segment's audio is kept in a buffer that starts at the first speech the detector found. Each
``process()`` with at least ``min_chunk_s`` of new audio re-runs the detector over the buffer:

- a gap of at least ``pause_s`` after speech finalizes the segment up to the end of that speech: its
  audio is decoded once more (and translated, for translating tasks), the final text is the committed
  words plus that decode's remaining words, and the buffer is trimmed there;
- a buffer of ``max_segment_s`` or more has its first ``max_segment_s`` finalized (``forced``);
- otherwise the buffer is re-decoded and LocalAgreement-n commits the words n hypotheses agree on.

Silence before speech is dropped, so the buffer never holds more than ``max_segment_s`` of audio.
"""

from __future__ import annotations

import time

import numpy as np

from speechkit.audio import SAMPLE_RATE
from speechkit.audio.vad import SpeechSegment
from speechkit.errors import SpeechkitError
from speechkit.streaming.detector import SpeechDetector, VadDetector
from speechkit.streaming.policy import LocalAgreement, estimate_times, join_units, split_units
from speechkit.streaming.records import Segment, StreamOptions, StreamTask, Update, Word
from speechkit.streaming.step import ModelStep, StepRequest, StepResult
from speechkit.text.prompts import PromptSpec, Task


class StreamError(SpeechkitError):
    """A streaming engine used out of order, or fed audio it cannot use."""


class StreamingEngine:
    """One stream's state. Not thread-safe: one caller at a time (the server gives each stream one task).

    ``step`` decodes audio (see :mod:`speechkit.streaming.step`); ``detector`` finds speech in the buffer
    (default: :class:`~speechkit.streaming.detector.VadDetector`).
    """

    def __init__(
        self, step: ModelStep, options: StreamOptions | None = None, detector: SpeechDetector | None = None
    ) -> None:
        options = options or StreamOptions()
        self.step = step
        self.options = options
        self.detector = detector or VadDetector()
        self._policy = LocalAgreement(options.agreement)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # stream sample index of _buffer[0]
        self._decoded = 0  # buffer length at the last detector run
        self._committed: list[Word] = []
        self._next_id = 0
        self._finished = False
        self._compute = 0.0
        asr = PromptSpec(Task.ASR, context=options.context)
        self._asr_spec = None if options.task is StreamTask.TRANSLATE else asr
        task = Task.AST_COT if options.cot else Task.AST
        self._ast_spec = (
            None if options.task is StreamTask.TRANSCRIBE else PromptSpec(task, options.target, options.context)
        )

    @property
    def time(self) -> float:
        """Seconds of audio received so far."""
        return (self._offset + len(self._buffer)) / SAMPLE_RATE

    def insert_audio(self, chunk: np.ndarray) -> None:
        """Append (N,) float32 samples in [-1, 1] at ``SAMPLE_RATE`` (16 kHz mono)."""
        if self._finished:
            raise StreamError("insert_audio() after finish(): start a new stream")
        chunk = np.asarray(chunk)
        if chunk.ndim != 1 or chunk.dtype != np.float32:
            raise StreamError(f"audio chunk must be 1-D float32 at 16 kHz, got shape {chunk.shape} {chunk.dtype}")
        if not np.isfinite(chunk).all():
            raise StreamError("audio chunk contains NaN or infinite samples")
        self._buffer = np.concatenate([self._buffer, chunk])

    def process(self) -> Update:
        """Decode when ``min_chunk_s`` of new audio has arrived; returns what changed (maybe nothing)."""
        if self._finished:
            raise StreamError("process() after finish(): start a new stream")
        if len(self._buffer) - self._decoded < self.options.min_chunk_s * SAMPLE_RATE:
            return Update(self.time)
        return self._advance(at_end=False)

    def finish(self) -> Update:
        """End of input: finalize whatever speech is left. The engine accepts nothing afterwards."""
        if self._finished:
            raise StreamError("finish() called twice")
        update = self._advance(at_end=True)
        self._finished = True
        return update

    def _advance(self, at_end: bool) -> Update:
        self._compute = 0.0
        finals: list[Segment] = []
        partial = None
        while True:
            regions = self._speech()
            if not regions:
                # keep the last pause_s: a word may be starting there
                keep = 0 if at_end else round(self.options.pause_s * SAMPLE_RATE)
                self._drop(max(len(self._buffer) - keep, 0))
                break
            cut = self._pause_end(regions)
            if cut is None and at_end:
                cut = regions[-1].end
            if cut is not None:
                finals.extend(self._finalize(max(_sample(cut), 1), forced=False))
                continue
            limit = _sample(self.options.max_segment_s)
            if len(self._buffer) >= limit:
                finals.extend(self._finalize(limit, forced=True))
                continue
            if self._asr_spec is not None:
                partial = self._partial(_sample(regions[-1].end))
            break
        self._decoded = len(self._buffer)
        return Update(self.time, tuple(finals), partial, self._compute)

    def _speech(self) -> list[SpeechSegment]:
        """Detector regions, after dropping silence before the first one (times from the new buffer start)."""
        regions = self.detector(self._buffer) if len(self._buffer) else []
        if regions and regions[0].start > 0:
            shift = _sample(regions[0].start)
            self._drop(shift)
            regions = [SpeechSegment(r.start - shift / SAMPLE_RATE, r.end - shift / SAMPLE_RATE) for r in regions]
        return regions

    def _pause_end(self, regions: list[SpeechSegment]) -> float | None:
        """End of the first speech region followed by at least ``pause_s`` of silence, if any."""
        duration = len(self._buffer) / SAMPLE_RATE
        for i, region in enumerate(regions):
            following = regions[i + 1].start if i + 1 < len(regions) else duration
            if following - region.end >= self.options.pause_s:
                return region.end
        return None

    def _decode(self, requests: list[StepRequest]) -> list[StepResult]:
        started = time.perf_counter()
        results = self.step(requests)
        self._compute += time.perf_counter() - started
        return results

    def _request(self, end: int, spec: PromptSpec) -> StepRequest:
        return StepRequest(self._buffer[:end], self._offset / SAMPLE_RATE, spec)

    def _partial(self, end: int) -> Segment:
        assert self._asr_spec is not None
        [result] = self._decode([self._request(end, self._asr_spec)])
        hypothesis = split_units(result.text, self.options.language)
        fresh = self._policy.insert(hypothesis)
        tail = self._policy.tail(hypothesis)
        start = self._committed[-1].end if self._committed else self._offset / SAMPLE_RATE
        timed = estimate_times([*fresh, *tail], start, (self._offset + end) / SAMPLE_RATE, final=False)
        self._committed += [Word(w.start, w.end, w.text, final=True) for w in timed[: len(fresh)]]
        return self._segment(end, [*self._committed, *timed[len(fresh) :]], final=False)

    def _finalize(self, end: int, forced: bool) -> list[Segment]:
        specs = [s for s in (self._asr_spec, self._ast_spec) if s is not None]
        results = self._decode([self._request(end, spec) for spec in specs])
        seg_end = (self._offset + end) / SAMPLE_RATE
        translation = None
        if self._ast_spec is not None:
            last = results[-1]
            translation = (last.translation if last.translation is not None else last.text).strip()
        if self._asr_spec is not None:
            tail = self._policy.tail(split_units(results[0].text, self.options.language))
            start = self._committed[-1].end if self._committed else self._offset / SAMPLE_RATE
            words = [*self._committed, *estimate_times(tail, start, seg_end, final=True)]
        else:
            units = split_units(translation or "", self.options.target)
            words = estimate_times(units, self._offset / SAMPLE_RATE, seg_end, final=True)
        segment = self._segment(end, words, final=True, translation=translation, forced=forced)
        self._drop(end)
        self._policy.reset()
        self._committed = []
        if not segment.words:
            return []  # nothing was said: no segment id is used
        self._next_id += 1
        return [segment]

    def _segment(
        self, end: int, words: list[Word], final: bool, translation: str | None = None, forced: bool = False
    ) -> Segment:
        language = self.options.language if self._asr_spec is not None else self.options.target
        text = join_units([w.text for w in words], language)
        start, stop = self._offset / SAMPLE_RATE, (self._offset + end) / SAMPLE_RATE
        return Segment(self._next_id, round(start, 3), round(stop, 3), text, tuple(words), final, translation, forced)

    def _drop(self, n: int) -> None:
        self._buffer = self._buffer[n:]
        self._offset += n
        self._decoded = max(self._decoded - n, 0)


def _sample(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)
