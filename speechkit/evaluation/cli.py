"""``speechkit eval``: run a suite, resumably, then score it and write a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechkit.errors import SpeechkitError
from speechkit.evaluation.recognizer import load_recognizer
from speechkit.evaluation.report import write_report
from speechkit.evaluation.runner import run_set
from speechkit.evaluation.sets import open_set
from speechkit.suites import available_suites, load_suite


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="run an evaluation suite (resumable) and write records, scores and a report",
        description="Decode a suite's sets into <out>/<set>.jsonl records (resumed if present), score them "
                    "and write <out>/report.md.",
    )  # fmt: skip
    parser.add_argument("--suite", required=True, help=f"{', '.join(available_suites())}, or a suite .json")
    parser.add_argument("--data-root", required=True, type=Path, help="folder holding the corpora")
    parser.add_argument("--model", required=True, help="checkpoint (via speechkit.inference) or test:echo")
    parser.add_argument("--out", required=True, type=Path, help="output folder (records, report)")
    parser.add_argument("--limit", type=int, help="first N utterances of each set")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-batches", type=int, default=1,
                        help="batches decoded as one group, a row taking the next utterance as soon as its own "
                             "ends (continuous batching); 1: fixed batches")  # fmt: skip
    parser.add_argument("--beam-size", type=int, default=1,
                        help="hypotheses kept per utterance (beam search); 1: greedy, as the paper")  # fmt: skip
    parser.add_argument("--sets", help="comma-separated subset of the suite's set names")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if min(args.batch_size, args.group_batches, args.beam_size) < 1 or (args.limit is not None and args.limit < 1):
        raise SpeechkitError("--batch-size, --group-batches, --beam-size and --limit must be positive")
    suite = load_suite(args.suite)
    sets = suite.sets
    if args.sets:
        wanted = args.sets.split(",")
        unknown = sorted(set(wanted) - {s.name for s in sets})
        if unknown:
            raise SpeechkitError(f"--sets: {', '.join(unknown)} not in suite {suite.name}")
        sets = [s for s in sets if s.name in wanted]
    recognizer = load_recognizer(args.model, batch_size=args.batch_size, beam_size=args.beam_size)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for spec in sets:
        utterances = open_set(spec, args.data_root)
        result = run_set(recognizer, spec, utterances, args.out, args.batch_size, args.limit,
                         group_batches=args.group_batches)  # fmt: skip
        score = "no records" if result.score is None else f"{result.score.metric} {result.score.score:.2f}"
        print(f"{spec.name}: decoded {result.decoded}, {score} -> {result.records}", file=sys.stderr)
        runs.append(result)
    print(write_report(suite.name, runs, args.out, recognizer.name))
    return 0
