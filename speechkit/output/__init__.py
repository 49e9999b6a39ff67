"""Output leaves: timed text, subtitle cues and whisper-style files. Nothing here imports the model."""

from speechkit.output.cues import CueOptions, TimedText, format_timestamp, to_cues
from speechkit.output.writers import (
    OUTPUT_FORMATS,
    expand_formats,
    output_stems,
    write_json,
    write_outputs,
    write_srt,
    write_tsv,
    write_txt,
    write_vtt,
)

__all__ = [
    "OUTPUT_FORMATS",
    "CueOptions",
    "TimedText",
    "expand_formats",
    "format_timestamp",
    "output_stems",
    "to_cues",
    "write_json",
    "write_outputs",
    "write_srt",
    "write_tsv",
    "write_txt",
    "write_vtt",
]
