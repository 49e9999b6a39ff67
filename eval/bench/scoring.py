"""Benchmark: read and score 100,000 records on one core (target: under 30 s per protocol).

    python eval/bench/scoring.py [--n 100000] [--protocol openasr paper openasr-2025]

Records are synthetic English utterances built from eval/normalizers/sentences_en.txt (number-heavy,
so harder than real transcripts), each made unique, with seeded word errors (half the hypotheses
exact), written to a temporary JSONL file; the timing covers reading that file and scoring it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from speechkit.scoring import read_records, score_records

SENTENCES = Path(__file__).resolve().parents[1] / "normalizers" / "sentences_en.txt"


def make_records(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = [s for s in SENTENCES.read_text("utf-8").splitlines() if s.strip() and not s.startswith("#")]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            ref = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 2)))  # ~10-25 words
            ref += f" take {rng.randint(2, 10**6)}"  # every text unique: no help from the normalizer memo
            words = ref.split()
            if words and rng.random() < 0.5:
                del words[rng.randrange(len(words))]
            row = {"id": f"u{i}", "audio_filepath": f"u{i}.wav", "duration": rng.uniform(2, 15),
                   "time": rng.uniform(0.01, 0.1), "task": "asr", "src_lang": "en", "text": ref,
                   "pred_text": " ".join(words)}  # fmt: skip
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--protocol", nargs="+", default=["openasr", "paper", "openasr-2025"])
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(f"host: {platform.processor() or platform.machine()}, python {platform.python_version()}, 1 core")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        make_records(path, args.n)
        for protocol in args.protocol:
            start = time.perf_counter()
            records = read_records(path)
            read_s = time.perf_counter() - start
            result = score_records(records, protocol=protocol)
            total = time.perf_counter() - start
            print(f"{protocol:>13}: {args.n} records, read {read_s:.1f} s, total {total:.1f} s "
                  f"(WER {result.score:.2f}, RTFx {result.rtfx:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
