"""``speechkit transcribe | translate | summarize | ask``: audio files in, text or JSON lines out.

Output contract (``speechkit/schemas/result-v1.json``): with ``--format json`` stdout carries one
object per input file, one per line, in input order; logs and progress go to stderr. Exit code 0
when every file succeeded, 1 when some failed (each reported on stderr, the rest still processed),
2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speechkit import __version__
from speechkit.errors import ConfigError, SpeechkitError
from speechkit.model.hub import RELEASED_MODEL

USAGE_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    specs = {
        "transcribe": "speech recognition (language-agnostic prompt)",
        "translate": "speech translation into --to, optionally with chain of thought (--cot)",
        "summarize": "summarize the audio (prompt wording unconfirmed by the model card)",
        "ask": "answer the question spoken in the audio",
    }
    for name, help_text in specs.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.add_argument("files", nargs="+", metavar="FILE", help="audio files (anything libsndfile reads)")
        if name == "translate":
            p.add_argument("--to", required=True, help="target language, code or English name (fr, French)")
            p.add_argument("--cot", action="store_true", help="transcribe first, then translate (split at <sep>)")
        p.add_argument(
            "--model", default=RELEASED_MODEL, help=f"hub id or checkpoint directory (default {RELEASED_MODEL})"
        )
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--max-new-tokens", type=int, default=None, help="default: scaled to the audio duration")
        p.add_argument("--language", default=None, help="source language hint (recorded in the output)")
        p.add_argument("--prompt", default=None, help="extra context appended after the task instruction")
        p.add_argument("--format", default="txt", choices=["txt", "json"])
        p.add_argument("--output-dir", type=Path, default=None, help="also write <name>.<format> per input here")
        p.set_defaults(run=_run, task=name)


def _run(args: argparse.Namespace) -> int:
    from speechkit.inference.pipeline import DecodeOptions, Pipeline
    from speechkit.text.prompts import PromptSpec, Task, resolve_language

    task = {"transcribe": Task.ASR, "summarize": Task.SUMMARIZE, "ask": Task.QA}.get(args.task)
    if task is None:
        task = Task.AST_COT if args.cot else Task.AST
    try:
        options = DecodeOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        spec = PromptSpec(task, language=getattr(args, "to", None), context=args.prompt)
        if args.language is not None:
            resolve_language(args.language)
    except ConfigError as err:
        print(f"speechkit {args.task}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    pipeline = Pipeline.load(args.model, device=args.device, dtype=args.dtype)
    writer = _OrderedWriter(args, len(args.files))
    pipeline.run(args.files, spec, options, language=args.language, on_result=writer.result, on_error=writer.error)
    writer.progress_done()
    return 1 if writer.failed else 0


class _OrderedWriter:
    """Prints results in input order as soon as all earlier files are done; reports failures."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args, self.total = args, total
        self.pending: dict[int, dict | None] = {}
        self.next = 0
        self.done = 0
        self.failed = 0
        self.tty = sys.stderr.isatty()
        if args.output_dir is not None:
            args.output_dir.mkdir(parents=True, exist_ok=True)

    def result(self, i: int, result) -> None:
        record = {
            "file": self.args.files[i],
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
            "model": str(self.args.model),
            "speechkit_version": __version__,
        }
        self._settle(i, record)

    def error(self, i: int, err: SpeechkitError) -> None:
        self.failed += 1
        print(f"speechkit {self.args.task}: error: {err}", file=sys.stderr)
        self._settle(i, None)

    def _settle(self, i: int, record: dict | None) -> None:
        self.pending[i] = record
        self.done += 1
        while self.next in self.pending:
            record = self.pending.pop(self.next)
            if record is not None:
                self._emit(self.next, record)
            self.next += 1
        if self.tty:
            print(f"\r{self.args.task}: {self.done}/{self.total} files", end="", file=sys.stderr, flush=True)

    def _emit(self, i: int, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) if self.args.format == "json" else record["text"]
        print(line, flush=True)
        if self.args.output_dir is not None:
            stem = f"{i:04d}-{Path(self.args.files[i]).stem}" if self.total > 1 else Path(self.args.files[i]).stem
            (self.args.output_dir / f"{stem}.{self.args.format}").write_text(line + "\n", encoding="utf-8")

    def progress_done(self) -> None:
        if self.tty:
            print(file=sys.stderr)
