"""Subtitle and text outputs: whisper's formats exactly, cue limits, output-dir naming, pinned errors."""

from __future__ import annotations

import io
import json

import pytest
import srt
import webvtt

from speechkit.errors import ConfigError
from speechkit.output import (
    CueOptions,
    TimedText,
    expand_formats,
    format_timestamp,
    output_stems,
    to_cues,
    write_outputs,
    write_srt,
    write_tsv,
    write_txt,
    write_vtt,
)

SEGMENTS = [
    TimedText(0.0, 2.5, " And so, my fellow Americans --> ask not"),
    TimedText(3661.5, 3663.0004, "what your country can do\tfor you"),
    TimedText(3664.0, 3665.0, "   "),  # empty text: no cue
]


@pytest.mark.parametrize(
    ("seconds", "srt_time", "vtt_time"),
    [
        (0.0, "00:00:00,000", "00:00.000"),
        (0.0005, "00:00:00,000", "00:00.000"),  # round half to even, like whisper's round()
        (0.0015, "00:00:00,002", "00:00.002"),
        (59.9999, "00:01:00,000", "01:00.000"),
        (3661.5, "01:01:01,500", "01:01:01.500"),
        (36000.123, "10:00:00,123", "10:00:00.123"),
        (360000.0, "100:00:00,000", "100:00:00.000"),
    ],
)
def test_timestamps(seconds, srt_time, vtt_time):
    assert format_timestamp(seconds, always_hours=True, decimal=",") == srt_time
    assert format_timestamp(seconds, always_hours=False, decimal=".") == vtt_time


def render(writer, items) -> str:
    stream = io.StringIO()
    writer(items, stream)
    return stream.getvalue()


def test_srt_golden_and_parses():
    text = render(write_srt, SEGMENTS)
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,500\nAnd so, my fellow Americans -> ask not\n\n"
        "2\n01:01:01,500 --> 01:01:03,000\nwhat your country can do\tfor you\n\n"
    )
    parsed = list(srt.parse(text))
    assert [(s.index, s.start.total_seconds(), s.end.total_seconds()) for s in parsed] == [
        (1, 0.0, 2.5),
        (2, 3661.5, 3663.0),
    ]


def test_vtt_golden_and_parses():
    text = render(write_vtt, SEGMENTS)
    assert text == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:02.500\nAnd so, my fellow Americans -> ask not\n\n"
        "01:01:01.500 --> 01:01:03.000\nwhat your country can do\tfor you\n\n"
    )
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    assert [(c.start, c.end) for c in captions] == [("00:00:00.000", "00:00:02.500"), ("01:01:01.500", "01:01:03.000")]


def test_tsv_and_txt_golden():
    assert render(write_tsv, SEGMENTS) == (
        "start\tend\ttext\n"
        "0\t2500\tAnd so, my fellow Americans --> ask not\n"
        "3661500\t3663000\twhat your country can do for you\n"
    )
    assert render(write_txt, SEGMENTS) == "And so, my fellow Americans --> ask not\nwhat your country can do\tfor you\n"


def test_width_wraps_within_one_cue():
    cues = to_cues([TimedText(1.0, 3.0, "ask not what your country can do for you")], CueOptions(max_line_width=16))
    assert cues == [TimedText(1.0, 3.0, "ask not what\nyour country can\ndo for you", False)]


def test_count_splits_into_estimated_cues_interpolated_by_characters():
    segment = TimedText(10.0, 14.0, "ask not what your country can do for you")  # 40 characters
    cues = to_cues([segment], CueOptions(max_line_width=16, max_line_count=2))
    # "ask not what your country can" (29) + the break space: 30/40 of 4 s; "do for you": the rest.
    assert [(round(c.start, 6), round(c.end, 6), c.text, c.estimated) for c in cues] == [
        (10.0, round(10 + 4 * 30 / 40, 6), "ask not what\nyour country can", True),
        (round(10 + 4 * 30 / 40, 6), 14.0, "do for you", True),
    ]
    assert render(write_srt, cues).startswith("1\n00:00:10,000 --> 00:00:13,000\nask not what\nyour country can\n\n2\n")


def test_long_word_stands_alone_and_cues_cover_the_segment():
    segment = TimedText(0.0, 9.0, "a supercalifragilisticexpialidocious b c d e f")
    cues = to_cues([segment], CueOptions(max_line_width=5, max_line_count=1))
    assert [c.text for c in cues] == ["a", "supercalifragilisticexpialidocious", "b c d", "e f"]
    assert cues[0].start == 0.0 and cues[-1].end == 9.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:], strict=False))


def test_output_stems_do_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inputs = [tmp_path / "a" / "talk.wav", tmp_path / "b" / "talk.wav", tmp_path / "a" / "talk.flac"]
    inputs += [tmp_path / "a" / "intro.wav", tmp_path / "a" / "intro.wav"]
    stems = output_stems(inputs, tmp_path / "out")
    names = [stems[p.resolve()].name for p in inputs[:4]]
    assert names[3] == "intro" and len(stems) == 4
    assert len(set(names)) == 4
    assert all(n.startswith("talk-") and len(n) == len("talk-") + 8 for n in names[:3])
    assert output_stems(inputs, tmp_path / "out") == stems  # stable from run to run


def test_write_outputs_all(tmp_path):
    record = {"id": "talk", "text": "héllo", "segments": [{"id": 0, "start": 0.0, "end": 2.5}]}
    paths = write_outputs(tmp_path / "out" / "talk", ["all"], SEGMENTS[:2], record, CueOptions(42, 2))
    assert [p.name for p in paths] == ["talk.txt", "talk.json", "talk.srt", "talk.vtt", "talk.tsv"]
    assert json.loads((tmp_path / "out" / "talk.json").read_text(encoding="utf-8")) == record
    assert (tmp_path / "out" / "talk.json").read_text(encoding="utf-8").count("\n") == 1


def test_expand_formats_keeps_a_fixed_order():
    assert expand_formats(["srt", "txt"]) == ("txt", "srt")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CueOptions(max_line_width=0), "max_line_width=0 must be at least 1"),
        (lambda: CueOptions(max_line_width=42, max_line_count=0), "max_line_count=0 must be at least 1"),
        (
            lambda: CueOptions(max_line_count=2),
            "max_line_count needs max_line_width: lines are only counted once text is wrapped",
        ),
        (
            lambda: expand_formats(["srt", "ass"]),
            "output format 'ass' is unknown; choose from txt, json, srt, vtt, tsv or all",
        ),
        (
            lambda: format_timestamp(-0.5, always_hours=True, decimal=","),
            "timestamp -0.5 s is negative; segment times start at 0",
        ),
    ],
)
def test_errors(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message
