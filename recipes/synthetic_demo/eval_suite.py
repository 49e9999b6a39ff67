"""Write the held-out evaluation suite of the demo: per-language ASR manifests and per-pair AST manifests
cut from the synthesized ``test.jsonl``, and ``suite.json`` for ``speechkit eval``.

    python3 recipes/synthetic_demo/eval_suite.py --audio data/synthetic_demo/audio [--per-set 200] [--ast]
    speechkit eval --suite data/synthetic_demo/audio/suite.json --data-root data/synthetic_demo/audio \\
        --model demo --out runs/demo_eval

Manifests land next to ``test.jsonl`` (their audio paths stay relative to it). Japanese and Chinese are
scored by CER under the ``paper`` protocol, the rest by WER; translation by BLEU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, required=True, help="folder holding the synthesized test.jsonl")
    parser.add_argument("--per-set", type=int, default=200, help="utterances per set (first N in manifest order)")
    parser.add_argument("--ast", action="store_true", help="add translation sets (direct and chain-of-thought)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.audio / "test.jsonl").read_text("utf-8").splitlines() if line.strip()]
    groups: dict[tuple[str, str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault(("asr", row["src_lang"], None), []).append(row)
        if args.ast:
            groups.setdefault(("ast", row["src_lang"], row["tgt_lang"]), []).append(row)
    sets = []
    for (task, src, tgt), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        name = f"demo-{src}" if task == "asr" else f"demo-{src}-{tgt}"
        path = args.audio / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in members[: args.per_set]), "utf-8")
        for cot in (False, True) if task == "ast" else (False,):
            sets.append({"name": name + ("-cot" if cot else ""), "reader": "manifest", "args": {"path": path.name},
                         "task": "ast_cot" if cot else task, "src_lang": src, "tgt_lang": tgt, "protocol": "paper"})
    suite = {"name": "synthetic-demo", "description": "espeak-ng, held-out sentences and voices",
             "sets": sets}  # fmt: skip
    (args.audio / "suite.json").write_text(json.dumps(suite, indent=1), "utf-8")
    print(f"{len(sets)} sets -> {args.audio / 'suite.json'}")


if __name__ == "__main__":
    main()
