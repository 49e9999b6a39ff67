"""Output files in whisper's formats (txt, json, srt, vtt, tsv) and where they go under ``--output-dir``.

Conventions follow openai/whisper ``utils.py``: SRT cues are numbered from 1 with ``HH:MM:SS,mmm``
times (hours always) and a blank line after each; VTT starts with ``WEBVTT`` and a blank line and uses
``MM:SS.mmm`` (hours only when non-zero); both replace ``-->`` in text by ``->`` so it cannot end a
timing line. TSV has the header ``start<TAB>end<TAB>text`` with integer milliseconds (no decimal mark
that a locale could turn into a comma) and tabs in text turned into spaces. TXT is one stripped
segment per line. JSON is one object per line, whatever fields the caller gives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from speechkit.errors import ConfigError
from speechkit.output.cues import CueOptions, TimedText, format_timestamp, to_cues

OUTPUT_FORMATS = ("txt", "json", "srt", "vtt", "tsv")
"""Formats ``--format`` accepts, besides ``all`` (every one of them)."""

_HASH_CHARS = 8


def write_txt(segments: Sequence[TimedText], stream: TextIO) -> None:
    """One line per segment with non-empty text."""
    for segment in segments:
        if text := segment.text.strip():
            stream.write(text + "\n")


def write_json(record: Mapping[str, Any], stream: TextIO) -> None:
    """``record`` as one line of JSON (UTF-8 text kept as is)."""
    stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_srt(cues: Sequence[TimedText], stream: TextIO) -> None:
    """SubRip cues from :func:`speechkit.output.cues.to_cues` (or plain segments)."""
    for number, cue in enumerate(_nonempty(cues), start=1):
        start = format_timestamp(cue.start, always_hours=True, decimal=",")
        end = format_timestamp(cue.end, always_hours=True, decimal=",")
        stream.write(f"{number}\n{start} --> {end}\n{_cue_text(cue)}\n\n")


def write_vtt(cues: Sequence[TimedText], stream: TextIO) -> None:
    """WebVTT cues from :func:`speechkit.output.cues.to_cues` (or plain segments)."""
    stream.write("WEBVTT\n\n")
    for cue in _nonempty(cues):
        start = format_timestamp(cue.start, always_hours=False, decimal=".")
        end = format_timestamp(cue.end, always_hours=False, decimal=".")
        stream.write(f"{start} --> {end}\n{_cue_text(cue)}\n\n")


def write_tsv(cues: Sequence[TimedText], stream: TextIO) -> None:
    """``start``/``end`` in integer milliseconds and the text on one line."""
    stream.write("start\tend\ttext\n")
    for cue in _nonempty(cues):
        text = " ".join(cue.text.replace("\t", " ").split())
        stream.write(f"{round(cue.start * 1000)}\t{round(cue.end * 1000)}\t{text}\n")


def expand_formats(names: Sequence[str]) -> tuple[str, ...]:
    """The formats to write for ``--format`` values (``all`` means every format), in a fixed order."""
    for name in names:
        if name != "all" and name not in OUTPUT_FORMATS:
            raise ConfigError(f"output format {name!r} is unknown; choose from {', '.join(OUTPUT_FORMATS)} or all")
    return OUTPUT_FORMATS if "all" in names else tuple(f for f in OUTPUT_FORMATS if f in names)


def output_stems(inputs: Sequence[str | Path], output_dir: str | Path) -> dict[Path, Path]:
    """Where each input's outputs go: ``output_dir / stem`` plus a format suffix.

    The stem is the input's file name without its extension. Inputs that share a stem but are
    different files (``a/talk.wav`` and ``b/talk.wav``, or ``talk.wav`` and ``talk.flac``) all get
    ``-`` and the first 8 hex digits of the SHA-1 of their absolute path appended instead, so that
    no input overwrites another's outputs and each name stays the same from run to run. The same
    file given twice maps to one stem. Keys are the absolute input paths.
    """
    absolute = list(dict.fromkeys(Path(p).resolve() for p in inputs))
    counts: dict[str, int] = {}
    for path in absolute:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    out = {}
    for path in absolute:
        stem = path.stem
        if counts[stem] > 1:
            stem += "-" + hashlib.sha1(str(path).encode()).hexdigest()[:_HASH_CHARS]
        out[path] = Path(output_dir) / stem
    return out


def write_outputs(
    stem: Path,
    formats: Sequence[str],
    segments: Sequence[TimedText],
    record: Mapping[str, Any],
    cue_options: CueOptions | None = None,
) -> list[Path]:
    """Write ``stem.<format>`` for each format (creating the folder) and return the paths written.

    ``segments`` feed txt and, cut to cues by ``cue_options``, srt/vtt/tsv; ``record`` is the json line.
    """
    cues = to_cues(list(segments), cue_options or CueOptions())
    writers: dict[str, Callable[[TextIO], None]] = {
        "txt": lambda f: write_txt(segments, f),
        "json": lambda f: write_json(record, f),
        "srt": lambda f: write_srt(cues, f),
        "vtt": lambda f: write_vtt(cues, f),
        "tsv": lambda f: write_tsv(cues, f),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in expand_formats(formats):
        path = stem.with_name(f"{stem.name}.{name}")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            writers[name](f)
        paths.append(path)
    return paths


def _nonempty(cues: Sequence[TimedText]) -> list[TimedText]:
    return [cue for cue in cues if cue.text.strip()]


def _cue_text(cue: TimedText) -> str:
    return "\n".join(line.strip() for line in cue.text.strip().replace("-->", "->").split("\n"))
