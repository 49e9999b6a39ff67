"""Records with known upstream scores: the Open ASR leaderboard's own pipeline run on records we build.

Called by ``make_golden.py`` with the imported leaderboard package. The upstream pipeline is: drop
samples whose normalized reference is empty (``data_utils.is_target_text_in_range``, at data
preparation upstream), write a results manifest, ``eval_utils.score_results`` on it.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
GERMAN = [
    "Die Weißwurstfrühstückspause beginnt um 10 Uhr.",
    "Wir fahren morgen mit dem Zug nach Berlin.",
    "Das Krankenhaus liegt an der Bahnhofstraße 12.",
    "Sie kaufte 3 Kilo Äpfel auf dem Wochenmarkt.",
    "Der Bundestag hat das Gesetz mit 400 Stimmen beschlossen.",
    "Mein Großvater war Schiffsbauingenieur.",
    "Es gibt 10 000 Möglichkeiten.",
    "Das Wetter ist heute schön.",
]


def _perturb(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(["drop", "dup", "swap", "split", "join", "sub", "case", "none"])
        i = rng.randrange(len(words)) if words else 0
        if not words:
            words = ["oops"]
        elif op == "drop":
            del words[i]
        elif op == "dup":
            words.insert(i, words[i])
        elif op == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == "split" and len(words[i]) > 5:  # compound split: "Bahnhofstraße" -> "Bahnhof straße"
            cut = rng.randint(2, len(words[i]) - 2)
            words[i : i + 1] = [words[i][:cut], words[i][cut:]]
        elif op == "join" and i + 1 < len(words):
            words[i : i + 2] = [words[i] + words[i + 1]]
        elif op == "sub":
            words[i] = rng.choice(["the", "a", "ja", "nein", "house", "und", "42"])
        elif op == "case":
            words[i] = words[i].upper()
    return " ".join(words)


def build_records(seed: int = 7) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    lines = (HERE / "sentences_en.txt").read_text("utf-8").splitlines()
    english = [line for line in lines if line.strip() and not line.startswith("#")]
    english += ["", "   ", "[noise]", "ignore time segment in scoring", "um uh"]  # dropped by the filter
    english += ["white paper and wi fi", "the whitepaper on wifi", "a b c news", "abc news"]
    sets: dict[str, list[dict]] = {"en": [], "de": []}
    for lang, pool in (("en", english), ("de", GERMAN * 6)):
        for i, ref in enumerate(pool):
            sets[lang].append({
                "id": f"{lang}-{i:04d}", "audio_filepath": f"{lang}-{i:04d}.wav", "task": "asr",
                "src_lang": lang, "text": ref, "pred_text": _perturb(rng, ref),
                "duration": round(rng.uniform(1, 20), 3), "time": round(rng.uniform(0.01, 0.5), 4),
            })  # fmt: skip
    return sets


def _upstream_score(oal, records: list[dict], lang: str) -> dict:
    du, eu = oal.data_utils, oal.eval_utils
    if lang == "en":
        kept = [r for r in records if du.is_target_text_in_range(du.normalizer(r["text"]))]
    else:  # the multilingual runs filter on the same English-normalized text upstream
        kept = [r for r in records if du.is_target_text_in_range(du.normalizer(r["text"]))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"MODEL_org-model_DATASET_golden_{lang}_test.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in kept:
                row = {k: r[k] for k in ("audio_filepath", "duration", "time", "text", "pred_text")}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with redirect_stdout(io.StringIO()):
            _, results = eu.score_results(tmp, language=lang, multilingual=lang != "en", csv_only=True)
    (value,) = results.values()
    return {"n": len(kept), **{k: value[k] for k in ("wer", "ins", "del", "sub", "rtfx")}}


def write_scoring_golden(oal, out: Path, upstream: str) -> None:
    sets = build_records()
    payload = {
        "_provenance": f"eval/normalizers/golden_scores.py running {upstream} normalizer/eval_utils.py",
        "sets": {lang: {"records": recs, "expected": _upstream_score(oal, recs, lang)}
                 for lang, recs in sets.items()},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {out}")
