"""Typed records the streaming layers exchange: words, segments, updates, and the run-time options.

Times are seconds from the start of the stream. The model emits no timestamps, so word times are
estimated inside detector-bounded segments (``estimated=True``); segment edges come from the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from speechkit.errors import ConfigError
from speechkit.text.prompts import resolve_language


class StreamTask(StrEnum):
    """What a stream produces: the transcript, the translation of each finalized segment, or both."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"
    BOTH = "both"


@dataclass(frozen=True)
class Word:
    """One word of a segment; ``final`` once committed (never retracted), ``estimated`` when its times are."""

    start: float
    end: float
    text: str
    final: bool = False
    estimated: bool = True


@dataclass(frozen=True)
class Segment:
    """Text between two pauses. A partial segment grows; a final one is never sent again.

    ``text`` is the transcript (committed words first, then the unstable tail); ``translation`` is set
    on final segments of translating streams (the segment's audio translated, not its text).
    """

    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    final: bool
    translation: str | None = None
    forced: bool = False  # finalized by the maximum segment length, not by a pause

    @property
    def committed_text(self) -> str:
        """The words no later update can change."""
        return " ".join(w.text for w in self.words if w.final)


@dataclass(frozen=True)
class Update:
    """What one ``process()``/``finish()`` call produced: finalized segments, then the open one's partial."""

    time: float  # seconds of audio the engine had consumed
    finals: tuple[Segment, ...] = ()
    partial: Segment | None = None
    compute_s: float = 0.0  # wall-clock seconds spent in the model step during this call

    @property
    def empty(self) -> bool:
        """True when the call changed nothing a client would show."""
        return not self.finals and self.partial is None


@dataclass(frozen=True)
class StreamOptions:
    """Run-time streaming options (the CLI flags and the WebSocket ``start`` message mirror these fields).

    ``agreement`` is n of LocalAgreement-n: a word is committed once n consecutive hypotheses agree on
    it. ``min_chunk_s`` is the new audio that triggers a re-decode; ``pause_s`` the silence that ends a
    segment; ``max_segment_s`` forces one when nobody pauses.
    """

    task: StreamTask = StreamTask.TRANSCRIBE
    target: str | None = None  # translation target language (code or name); translate/both only
    cot: bool = False  # translate through the chain-of-thought prompt (transcript <sep> translation)
    language: str | None = None  # source language hint: ja/zh etc. are split into characters, not words
    agreement: int = 2
    min_chunk_s: float = 1.0
    pause_s: float = 0.5
    max_segment_s: float = 15.0
    context: str | None = None  # appended to every prompt's instruction

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "task", StreamTask(self.task))
        except ValueError:
            raise ConfigError(f"stream task {self.task!r} is unknown; choose transcribe, translate or both") from None
        if self.task is StreamTask.TRANSCRIBE and (self.target is not None or self.cot):
            raise ConfigError("target/cot apply to translate or both, not to transcribe")
        if self.task is not StreamTask.TRANSCRIBE and self.target is None:
            raise ConfigError(f"stream task {self.task.value!r} needs a target language")
        if self.target is not None:
            resolve_language(self.target)
        if self.language is not None:
            resolve_language(self.language)
        if self.agreement < 1:
            raise ConfigError(f"agreement={self.agreement} must be >= 1")
        if not 0 < self.min_chunk_s <= 10:
            raise ConfigError(f"min_chunk_s={self.min_chunk_s} must be in (0, 10]")
        if self.pause_s < 0.1:
            raise ConfigError(f"pause_s={self.pause_s} must be >= 0.1")
        if not 2 * self.min_chunk_s <= self.max_segment_s <= 30:
            raise ConfigError(
                f"max_segment_s={self.max_segment_s} must be in [2 * min_chunk_s={2 * self.min_chunk_s}, 30]"
            )
