"""``speechkit transcribe | translate | summarize | ask``: audio files of any length in, text, JSON or subtitles out.

Output contract (``speechkit/schemas/result-v2.json``): with ``--format json`` (or ``all``) stdout
carries one object per input file, one per line, in input order; with ``txt`` and no
``--output-dir`` it carries each file's text on one line. ``--output-dir`` gets one output set per
input (``output_stems`` keeps same-named inputs apart). Logs and progress go to stderr; on a
terminal the progress line counts speech seconds and the last line reports RTFx. Exit code 0 when
every file succeeded, 1 when some failed (each reported on stderr, the rest still processed), 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from speechkit import __version__
from speechkit.audio.vad import VAD_METHODS, VadOptions
from speechkit.errors import ConfigError, SpeechkitError
from speechkit.model.hub import RELEASED_MODEL
from speechkit.output import (
    OUTPUT_FORMATS,
    CueOptions,
    TimedText,
    expand_formats,
    output_stems,
    to_cues,
    write_outputs,
)

USAGE_ERROR = 2
_DEFAULT_VAD = VadOptions()


def register(subparsers: argparse._SubParsersAction) -> None:
    specs = {
        "transcribe": "speech recognition (language-agnostic prompt)",
        "translate": "speech translation into --to, optionally with chain of thought (--cot)",
        "summarize": "summarize the audio (prompt wording unconfirmed by the model card)",
        "ask": "answer the question spoken in the audio",
    }
    for name, help_text in specs.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.add_argument("files", nargs="+", metavar="FILE", help="audio files of any length (anything libsndfile reads)")
        if name == "translate":
            p.add_argument("--to", required=True, help="target language, code or English name (fr, French)")
            p.add_argument("--cot", action="store_true", help="transcribe first, then translate (split at <sep>)")
        p.add_argument(
            "--model", default=RELEASED_MODEL, help=f"hub id or checkpoint directory (default {RELEASED_MODEL})"
        )
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
        p.add_argument("--batch-size", type=int, default=8, help="segments decoded together (across files)")
        p.add_argument("--group-batches", type=int, default=1,
                       help="batches decoded as one group, a row taking the next segment as soon as its own "
                            "ends (continuous batching); 1: fixed batches")  # fmt: skip
        p.add_argument("--max-new-tokens", type=int, default=None, help="default: scaled to each segment's duration")
        p.add_argument("--beam-size", type=int, default=1,
                       help="hypotheses kept per segment (beam search); 1: greedy, the fastest")  # fmt: skip
        p.add_argument("--language", default=None, help="source language hint (recorded in the output)")
        p.add_argument("--prompt", default=None, help="extra context appended after the task instruction")
        _add_output_args(p)
        _add_segmentation_args(p, request=name in ("summarize", "ask"))
        p.set_defaults(run=_run, task=name)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        default="txt",
        choices=[*OUTPUT_FORMATS, "all"],
        help="json: one line per file on stdout; txt: text on stdout without --output-dir; srt/vtt/tsv/all need "
        "--output-dir",
    )
    p.add_argument("--output-dir", type=Path, default=None, help="write <name>.<format> per input here")
    p.add_argument("--max-line-width", type=int, default=None, help="subtitle line width in characters")
    p.add_argument("--max-line-count", type=int, default=None, help="lines per subtitle cue (needs --max-line-width)")


def _add_segmentation_args(p: argparse.ArgumentParser, request: bool) -> None:
    from speechkit.inference.longform import DEFAULT_MAX_REQUEST_S

    vad = _DEFAULT_VAD
    p.add_argument("--vad", default=vad.method, choices=VAD_METHODS, help=f"speech detector (default {vad.method})")
    p.add_argument("--vad-aggressiveness", type=int, default=vad.aggressiveness, help="webrtcvad 0 (lenient) to 3")
    p.add_argument(
        "--max-segment", type=float, default=vad.max_segment_s, help="longest decoded segment in seconds; "
        "files no longer than this are decoded as one clip from their first to their last speech"
    )  # fmt: skip
    p.add_argument("--pad", type=float, default=vad.pad_s, help="seconds added around each speech region")
    if request:
        p.add_argument(
            "--max-request", type=float, default=DEFAULT_MAX_REQUEST_S, help="speech seconds in one request "
            f"(default {DEFAULT_MAX_REQUEST_S:.0f}); longer audio is handled in parts whose texts are then joined "
            "by a text-only request with the speech adapter off, so the model is loaded with its LoRA unmerged "
            "(exact, a little slower) when a file is longer than this"
        )  # fmt: skip


def _options(args: argparse.Namespace):
    from speechkit.inference.longform import LongformOptions
    from speechkit.inference.pipeline import DecodeOptions
    from speechkit.text.prompts import PromptSpec, Task, resolve_language

    task = {"transcribe": Task.ASR, "summarize": Task.SUMMARIZE, "ask": Task.QA}.get(args.task)
    if task is None:
        task = Task.AST_COT if args.cot else Task.AST
    decode = DecodeOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                           group_batches=args.group_batches, beam_size=args.beam_size)  # fmt: skip
    spec = PromptSpec(task, language=getattr(args, "to", None), context=args.prompt)
    if args.language is not None:
        resolve_language(args.language)
    # the split search must stay inside a segment; the flag only sets the limit
    search = min(_DEFAULT_VAD.split_search_s, args.max_segment / 2)
    vad = VadOptions(
        method=args.vad,
        aggressiveness=args.vad_aggressiveness,
        max_segment_s=args.max_segment,
        pad_s=args.pad,
        split_search_s=search,
    )
    longform = LongformOptions(vad=vad, max_request_s=getattr(args, "max_request", LongformOptions.max_request_s))
    cues = CueOptions(max_line_width=args.max_line_width, max_line_count=args.max_line_count)
    formats = expand_formats([args.format])
    if args.output_dir is None and args.format not in ("txt", "json"):
        raise ConfigError(f"--format {args.format} writes files; add --output-dir DIR")
    return spec, decode, longform, cues, formats


def _run(args: argparse.Namespace) -> int:
    from speechkit.inference.distributed import Rank
    from speechkit.inference.longform import decode_long
    from speechkit.inference.pipeline import Pipeline
    from speechkit.inference.summary import summarize_long

    try:
        spec, decode, longform, cues, formats = _options(args)
    except ConfigError as err:
        print(f"speechkit {args.task}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    rank = Rank.from_env()
    text_requests = args.task in ("summarize", "ask") and _longer_than(args.files, longform.max_request_s)
    pipeline = Pipeline.load(
        args.model, device=rank.device(args.device), dtype=args.dtype, lora="unmerged" if text_requests else "merged"
    )
    if rank.world > 1:
        return _run_sharded(args, rank, pipeline, (spec, decode, longform), cues, formats)
    writer = _OrderedWriter(args, formats, cues)
    start = time.perf_counter()
    driver = summarize_long if args.task in ("summarize", "ask") else decode_long
    driver(
        pipeline,
        args.files,
        spec,
        decode,
        longform,
        language=args.language,
        on_result=writer.result,
        on_error=writer.error,
        on_progress=writer.progress,
    )
    writer.finish(time.perf_counter() - start)
    return 1 if writer.failed else 0


def _run_sharded(args: argparse.Namespace, rank, pipeline, request: tuple, cues: CueOptions,
                 formats: tuple[str, ...]) -> int:  # fmt: skip
    """Under torchrun: decode this rank's length-balanced shard; rank 0 prints every file in input order."""
    import torch.distributed as dist

    from speechkit.inference.distributed import ShardResults, shard_by_length
    from speechkit.inference.longform import decode_long
    from speechkit.inference.summary import summarize_long

    dist.init_process_group("gloo")
    try:
        mine = shard_by_length([_duration(f) for f in args.files], rank.world)[rank.index]
        folder = Path(tempfile.gettempdir()) / f"speechkit-shards-{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"
        shard = ShardResults(folder, rank)
        writer = _OrderedWriter(args, formats, cues)  # writes this rank's output files; rank 0 prints

        def on_result(j: int, result) -> None:
            record = result_record(result, args.files[mine[j]], str(args.model), cues)
            shard.add(mine[j], record)
            if writer.stems is not None:
                writer.write_files(mine[j], result, record)

        def on_error(j: int, err: SpeechkitError) -> None:
            shard.add(mine[j], error=str(err))

        driver = summarize_long if args.task in ("summarize", "ask") else decode_long
        driver(pipeline, [args.files[i] for i in mine], *request, language=args.language, on_result=on_result,
               on_error=on_error, on_progress=lambda done, total: None)  # fmt: skip
        failed = 0
        for entry in shard.gather():
            if "error" in entry:
                failed += 1
                print(f"speechkit {args.task}: error: {entry['error']}", file=sys.stderr)
            elif args.format in ("json", "all"):
                print(json.dumps(entry["record"], ensure_ascii=False), flush=True)
            elif args.format == "txt" and writer.stems is None:
                print(entry["record"]["text"], flush=True)
        return 1 if failed else 0
    finally:
        dist.destroy_process_group()


def _duration(path: str) -> float:
    from speechkit.audio import audio_info

    try:
        return audio_info(path).duration
    except SpeechkitError:
        return 0.0  # reported by the rank that decodes it


def _longer_than(files: list[str], seconds: float) -> bool:
    from speechkit.audio import audio_info

    for path in files:
        try:
            if audio_info(path).duration > seconds:
                return True
        except SpeechkitError:
            continue  # reported when the file is processed
    return False


class _OrderedWriter:
    """Prints results in input order as soon as all earlier files are done; writes files; reports failures."""

    def __init__(self, args: argparse.Namespace, formats: tuple[str, ...], cues: CueOptions) -> None:
        self.args, self.formats, self.cues = args, formats, cues
        self.total = len(args.files)
        self.stems = None if args.output_dir is None else output_stems(args.files, args.output_dir)
        self.pending: dict[int, tuple | None] = {}
        self.next = 0
        self.failed = 0
        self.audio_s = 0.0
        self.tty = sys.stderr.isatty()

    def result(self, i: int, result) -> None:
        self.audio_s += result.duration
        self._settle(i, (result, result_record(result, self.args.files[i], str(self.args.model), self.cues)))

    def error(self, i: int, err: SpeechkitError) -> None:
        self.failed += 1
        print(f"speechkit {self.args.task}: error: {err}", file=sys.stderr)
        self._settle(i, None)

    def progress(self, done_s: float, total_s: float) -> None:
        if self.tty:
            print(f"\r{self.args.task}: {done_s:.0f}/{total_s:.0f} s of speech", end="", file=sys.stderr, flush=True)

    def finish(self, seconds: float) -> None:
        if self.tty:
            rtfx = self.audio_s / seconds if seconds > 0 else float("inf")
            print(f"\n{self.args.task}: {self.audio_s:.1f} s of audio in {seconds:.1f} s, RTFx {rtfx:.1f}",
                  file=sys.stderr)  # fmt: skip

    def _settle(self, i: int, item: tuple | None) -> None:
        self.pending[i] = item
        while self.next in self.pending:
            item = self.pending.pop(self.next)
            if item is not None:
                self._emit(self.next, *item)
            self.next += 1

    def _emit(self, i: int, result, record: dict) -> None:
        if self.args.format in ("json", "all"):
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif self.args.format == "txt" and self.stems is None:
            print(result.text, flush=True)
        if self.stems is not None:
            self.write_files(i, result, record)

    def write_files(self, i: int, result, record: dict) -> None:
        stem = self.stems[Path(self.args.files[i]).resolve()]
        timed = [TimedText(s.start, s.end, s.text) for s in result.segments]
        write_outputs(stem, self.formats, timed, record, self.cues)


def result_record(result, file: str, model: str, cues: CueOptions) -> dict:
    """The JSON object of one file (``result-v2.json``) from a ``LongResult``."""
    segments = []
    for s in result.segments:
        segment = {
            "id": s.id,
            "start": s.start,
            "end": s.end,
            "text": s.text,
            "transcript": s.transcript,
            "translation": s.translation,
            "tokens": list(s.tokens),
            "avg_logprob": s.avg_logprob,
            "flags": list(s.flags),
            "estimated": False,  # detector times
        }
        split = to_cues([TimedText(s.start, s.end, s.text)], cues)
        if len(split) > 1:  # the subtitle files cut this segment: cue times are interpolated
            segment["cues"] = [
                {"start": c.start, "end": c.end, "text": c.text, "estimated": c.estimated} for c in split
            ]
        segments.append(segment)
    return {
        "file": file,
        "task": result.task,
        "language": result.language,
        "target_language": result.target_language,
        "text": result.text,
        "transcript": result.transcript,
        "translation": result.translation,
        "tokens": list(result.tokens),
        "avg_logprob": result.avg_logprob,
        "flags": list(result.flags),
        "duration": result.duration,
        "model": model,
        "speechkit_version": __version__,
        "segments": segments,
    }
