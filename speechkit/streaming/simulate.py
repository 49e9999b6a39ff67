"""Replay a recording as a stream and measure latency against the offline output of the same audio.

Two clocks, as in whisper_streaming's simulation: *compute-unaware* (default) feeds ``min_chunk_s`` at a
time and stamps each output with the audio consumed, so runs are deterministic and measure the policy;
*compute-aware* (``realtime=True``) lets the clock run on while the model works, as it would live: audio
that arrived meanwhile is fed at once, and outputs are stamped with audio time plus compute time. Neither
sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from speechkit.audio import SAMPLE_RATE
from speechkit.errors import SpeechkitError
from speechkit.scoring.metrics import count_errors
from speechkit.streaming.detector import SpeechDetector
from speechkit.streaming.engine import StreamingEngine
from speechkit.streaming.metrics import average_lagging, length_adaptive_average_lagging, percentile
from speechkit.streaming.policy import split_units
from speechkit.streaming.records import Segment, StreamOptions, StreamTask, Update
from speechkit.streaming.step import ModelStep, StepRequest
from speechkit.text.prompts import PromptSpec, Task


@dataclass(frozen=True)
class Emission:
    """One committed output unit and the stream time (s) at which it was committed."""

    text: str
    time: float
    segment_id: int


@dataclass(frozen=True)
class SimulationReport:
    """Latency and quality of one replay; times in seconds, ``wer`` a fraction (None without kaldialign)."""

    mode: str  # "compute-unaware" or "compute-aware"
    duration: float
    compute_s: float
    rtf: float  # compute seconds per audio second
    first_partial_latency: float | None  # first text shown minus the first segment's speech start
    finalization_delays: tuple[float, ...]  # per final segment: emission time minus its speech end
    average_lagging: float | None
    laal: float | None
    wer: float | None  # streamed vs offline output of the same step (CER for ja/zh)
    streamed: str
    offline: str
    segments: tuple[Segment, ...]
    emissions: tuple[Emission, ...]

    def summary(self) -> dict:
        """The headline numbers (what ``--json`` prints besides the per-word emissions)."""
        delays = self.finalization_delays
        return {
            "mode": self.mode,
            "duration_s": round(self.duration, 3),
            "rtf": round(self.rtf, 4),
            "first_partial_latency_s": _r(self.first_partial_latency),
            "finalization_delay_mean_s": _r(float(np.mean(delays)) if delays else None),
            "finalization_delay_p50_s": _r(percentile(delays, 50)),
            "finalization_delay_p95_s": _r(percentile(delays, 95)),
            "average_lagging_s": _r(self.average_lagging),
            "laal_s": _r(self.laal),
            "wer_vs_offline": _r(self.wer),
            "segments": len(self.segments),
            "units": len(self.emissions),
        }


def simulate(
    samples: np.ndarray,
    step: ModelStep,
    options: StreamOptions,
    detector: SpeechDetector,
    *,
    realtime: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> SimulationReport:
    """Replay (N,) float32 ``samples`` at ``SAMPLE_RATE`` through a fresh engine; see the module docstring."""
    engine = StreamingEngine(step, options, detector)
    chunk = round(options.min_chunk_s * SAMPLE_RATE)
    tracker = _Tracker(options)
    now, fed, compute = 0.0, 0, 0.0
    while fed < len(samples):
        now = max(now, (fed + chunk) / SAMPLE_RATE) if realtime else (fed + chunk) / SAMPLE_RATE
        upto = min(round(now * SAMPLE_RATE), len(samples))
        engine.insert_audio(samples[fed:upto])
        fed = upto
        started = clock()
        update = engine.process()
        spent = clock() - started
        compute += spent
        now = now + spent if realtime else engine.time
        tracker.add(update, now)
    started = clock()
    update = engine.finish()
    spent = clock() - started
    compute += spent
    tracker.add(update, max(now, engine.time) + (spent if realtime else 0.0))
    duration = len(samples) / SAMPLE_RATE
    return tracker.report(
        "compute-aware" if realtime else "compute-unaware",
        duration,
        compute,
        offline_units(samples, step, options, detector),
    )


def offline_units(samples: np.ndarray, step: ModelStep, options: StreamOptions, detector: SpeechDetector) -> list[str]:
    """The offline output of the same audio: every detected speech segment decoded whole, in one batch."""
    if options.task is StreamTask.TRANSLATE:
        spec, language = PromptSpec(Task.AST, options.target, options.context), options.target
    else:
        spec, language = PromptSpec(Task.ASR, context=options.context), options.language
    regions = detector(samples)
    requests = [StepRequest(samples[round(r.start * SAMPLE_RATE) : round(r.end * SAMPLE_RATE)], r.start, spec)
                for r in regions]  # fmt: skip
    results = step(requests) if requests else []
    return [u for result in results for u in split_units(result.text, language)]


class _Tracker:
    """Turns updates into per-unit emission times and per-segment finalization times."""

    def __init__(self, options: StreamOptions) -> None:
        self.translate_only = options.task is StreamTask.TRANSLATE
        self.emissions: list[Emission] = []
        self.finals: list[Segment] = []
        self.final_times: list[float] = []
        self.first_text: float | None = None
        self._emitted_in_open = 0  # units of the open segment already emitted

    def add(self, update: Update, now: float) -> None:
        shown = [*update.finals, *([update.partial] if update.partial else [])]
        if self.first_text is None and any(s.text for s in shown):
            self.first_text = now
        for segment in update.finals:
            self._emit(segment, [w.text for w in segment.words], now)
            self.finals.append(segment)
            self.final_times.append(now)
            self._emitted_in_open = 0
        if update.partial is not None:
            self._emit(update.partial, [w.text for w in update.partial.words if w.final], now)

    def _emit(self, segment: Segment, units: list[str], now: float) -> None:
        for unit in units[self._emitted_in_open :]:
            self.emissions.append(Emission(unit, now, segment.id))
        self._emitted_in_open = max(self._emitted_in_open, len(units))

    def report(self, mode: str, duration: float, compute: float, offline: list[str]) -> SimulationReport:
        delays = [e.time for e in self.emissions]
        streamed = [e.text for e in self.emissions]
        al = laal = None
        if delays and offline:
            al = average_lagging(delays, duration, len(offline))
            laal = length_adaptive_average_lagging(delays, duration, len(offline))
        try:
            wer = count_errors([offline], [streamed]).rate
        except SpeechkitError:
            wer = None  # kaldialign (the eval extra) is not installed
        first = None
        if self.first_text is not None and self.finals:
            first = self.first_text - self.finals[0].start
        return SimulationReport(
            mode,
            duration,
            compute,
            compute / duration if duration else 0.0,
            first,
            tuple(round(t - s.end, 3) for s, t in zip(self.finals, self.final_times, strict=True)),
            al,
            laal,
            wer,
            " ".join(streamed),
            " ".join(offline),
            tuple(self.finals),
            tuple(self.emissions),
        )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
