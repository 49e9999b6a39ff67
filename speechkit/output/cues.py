"""Timed text and its cues: timestamps in whisper's formats, and line/cue limits for subtitles.

The model emits no timestamps, so a segment's times come from the speech detector. When a segment's
text must become several cues (``max_line_count`` lines of at most ``max_line_width`` characters
each), each cue's times are interpolated by characters through the segment and marked ``estimated``.
"""

from __future__ import annotations

from dataclasses import dataclass

from speechkit.errors import ConfigError


@dataclass(frozen=True)
class TimedText:
    """Text spoken between ``start`` and ``end`` seconds of the original file."""

    start: float
    end: float
    text: str
    estimated: bool = False  # times interpolated inside a segment, not measured


@dataclass(frozen=True)
class CueOptions:
    """Line limits for subtitle cues (whisper's ``--max_line_width``/``--max_line_count``). Checked on construction.

    ``max_line_width`` (characters) wraps text at spaces into lines of at most that width (a longer
    word stands alone); ``max_line_count`` then puts at most that many lines in each cue, splitting
    the segment into several cues. None means no limit.
    """

    max_line_width: int | None = None
    max_line_count: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        if self.max_line_count is not None and self.max_line_width is None:
            raise ConfigError("max_line_count needs max_line_width: lines are only counted once text is wrapped")


def format_timestamp(seconds: float, *, always_hours: bool, decimal: str) -> str:
    """``HH:MM:SS,mmm``-style time as whisper writes it: rounded to whole milliseconds.

    ``always_hours`` False drops the hours while they are 0 (VTT); ``decimal`` is ``","`` (SRT) or
    ``"."`` (VTT).
    """
    if seconds < 0:
        raise ConfigError(f"timestamp {seconds} s is negative; segment times start at 0")
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_cues(segments: list[TimedText], options: CueOptions) -> list[TimedText]:
    """Cues for subtitles: each segment's text wrapped, then split every ``max_line_count`` lines.

    A cue's text holds its lines joined by ``"\\n"``. Split cues divide the segment's time in
    proportion to their characters (spaces at the breaks count with the cue before) and are
    ``estimated``; an unsplit segment keeps its times and flag.
    """
    cues = []
    for segment in segments:
        lines = _wrap(segment.text.strip(), options.max_line_width)
        count = options.max_line_count or max(len(lines), 1)
        groups = [lines[i : i + count] for i in range(0, len(lines), count)]
        if len(groups) <= 1:
            cues.append(TimedText(segment.start, segment.end, "\n".join(lines), segment.estimated))
            continue
        total = sum(len(" ".join(g)) for g in groups) + len(groups) - 1
        span, done = segment.end - segment.start, 0
        for group in groups:
            start = segment.start + span * done / total
            done += len(" ".join(group)) + 1
            end = segment.start + span * min(done, total) / total
            cues.append(TimedText(start, end, "\n".join(group), True))
    return cues


def _wrap(text: str, width: int | None) -> list[str]:
    if not text:
        return []
    if width is None:
        return [text]
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines
