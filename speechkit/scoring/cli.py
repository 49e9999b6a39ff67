"""``speechkit score RECORDS.jsonl``: score a records file and print the result."""

from __future__ import annotations

import argparse
import json

from speechkit.scoring.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from speechkit.scoring.records import read_records
from speechkit.scoring.score import METRICS, ScoreResult, score_records


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score a records file (WER/CER/BLEU, RTFx)",
        description="Score decoded records (JSONL, NeMo/leaderboard field names accepted).",
    )  # fmt: skip
    parser.add_argument("records", help="records JSONL file")
    parser.add_argument("--metric", choices=METRICS, default="auto",
                        help="auto: BLEU for translation, else CER for zh/ja/ko/th (paper) and WER")
    parser.add_argument("--lang", help="language of all records (overrides src_lang / tgt_lang)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default=DEFAULT_PROTOCOL,
                        help="normalizer and alignment rules (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def format_result(result: ScoreResult) -> str:
    """Human-readable lines: the overall score, then one line per language."""
    name = result.metric.upper()
    lines = [f"{name} {result.score:.2f} over {result.n} utterances (protocol {result.protocol})"]
    if result.rtfx is not None:
        lines[0] += f", RTFx {result.rtfx:.2f}"
    for key, group in result.per_lang.items():
        line = f"  {key}: {group.metric.upper()} {group.score:.2f} (n={group.n}"
        if group.counts is not None:
            c = group.counts
            line += f", ins={c.ins} del={c.dels} sub={c.sub}, {group.normalizer}"
            line += f", {group.dropped} empty references dropped" if group.dropped else ""
        else:
            line += f", chrF {group.chrf:.2f}, {group.signature}"
        lines.append(line + ")")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = score_records(read_records(args.records), args.metric, args.lang, args.protocol)
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else format_result(result))
    return 0
