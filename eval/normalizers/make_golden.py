"""Generate the golden normalizer tables and the word tables our normalizers ship, from pinned upstream code.

Run once by hand when an upstream pin changes; the outputs are committed and the tests compare against
them. Upstream code is imported from checkouts OUTSIDE this repository and is never copied into it:

    git clone https://github.com/openai/whisper /tmp/whisper && git -C /tmp/whisper checkout c0d2f62
    git clone https://github.com/huggingface/open_asr_leaderboard /tmp/oal
    git -C /tmp/oal checkout d1e99b2            # current leaderboard
    git -C /tmp/oal worktree add /tmp/oal-2024 afbfabc   # the leaderboard of 2024-2025
    pip install more-itertools regex num2words==0.5.14 kaldialign==0.12.0
    python eval/normalizers/make_golden.py --whisper /tmp/whisper --openasr /tmp/oal \
        --openasr-2024 /tmp/oal-2024

Writes ``speechkit/scoring/normalizers/tables/*.json`` (word lists extracted from upstream data),
``tests/data/normalizers/<name>@<version>.json`` (input -> upstream output) and
``tests/data/scoring/openasr_golden.json`` (records and the leaderboard's own score of them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TABLES = ROOT / "speechkit/scoring/normalizers/tables"
GOLDEN = ROOT / "tests/data/normalizers"
WHISPER = "openai/whisper@c0d2f624c09dc18e709e37c2ad90c039a4eb72a2"
OPENASR = "huggingface/open_asr_leaderboard@d1e99b25524814332d6868a5645e568670834cfb"
OPENASR_2024 = "huggingface/open_asr_leaderboard@afbfabccd093e91a7b634f0a96922d0006d99318"


def load_package(name: str, directory: Path) -> types.ModuleType:
    """Import ``directory`` as package ``name`` without running anything above it (whisper's __init__)."""
    spec = importlib.util.spec_from_file_location(
        name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_openasr(directory: Path, alias: str) -> types.ModuleType:
    """Import the leaderboard's ``normalizer`` package, with ``datasets``/``evaluate`` stubbed out."""
    for name in ("datasets", "evaluate"):  # heavy deps used only for loading data / the 2024 jiwer wrapper
        stub = types.ModuleType(name)
        stub.Audio = stub.IterableDataset = stub.load_dataset = stub.load = None
        sys.modules.setdefault(name, stub)
    for key in [k for k in sys.modules if k == "normalizer" or k.startswith("normalizer.")]:
        del sys.modules[key]
    sys.path.insert(0, str(directory))
    try:
        package = importlib.import_module("normalizer")
        importlib.import_module("normalizer.data_utils")
        importlib.import_module("normalizer.eval_utils")
    finally:
        sys.path.remove(str(directory))
    sys.modules[alias] = package
    return package


def english_inputs(whisper_dir: Path) -> list[str]:
    """whisper's own test strings, our sentences, and seeded random spoken-number phrases."""
    tests = (whisper_dir / "tests/test_normalizer.py").read_text("utf-8")
    inputs = re.findall(r'std\(\s*"((?:[^"\\]|\\.)*)"\s*\)', tests)
    lines = (HERE / "sentences_en.txt").read_text("utf-8").splitlines()
    inputs += [line for line in lines if line.strip() and not line.startswith("#")]
    vocab = ("zero oh one two three five seven eleven twelve fifteen nineteen twenty thirty forty ninety "
             "hundred thousand million billion hundreds thousands millions first second third fifth "
             "twelfth twentieth sixties ninth and a half point double triple minus plus positive "
             "dollars dollar cents pounds euros per cent percent the of 3 14 2.5 $5 £7 20 1 0 and").split()
    rng = random.Random(20240601)
    inputs += [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 7))) for _ in range(300)]
    return list(dict.fromkeys(inputs))


def multi_inputs() -> list[tuple[str, str]]:
    rows = (HERE / "sentences_multi.tsv").read_text("utf-8").splitlines()
    return [tuple(r.split("\t", 1)) for r in rows if r.strip() and not r.startswith("#")]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def write_tables(whisper_dir: Path, oal, oal_2024) -> None:
    note = "extracted by eval/normalizers/make_golden.py from "
    spelling = json.loads((whisper_dir / "whisper/normalizers/english.json").read_text("utf-8"))
    abbr, abbr_2024 = oal.english_abbreviations, oal_2024.english_abbreviations
    write_json(TABLES / "whisper_english_spelling.json",
               {"_provenance": note + WHISPER + " whisper/normalizers/english.json (MIT)", **spelling})
    write_json(TABLES / "openasr_2024_english_spelling.json",
               {"_provenance": note + OPENASR_2024 + " normalizer/english_abbreviations.py",
                **abbr_2024.english_spelling_normalizer})
    write_json(TABLES / "openasr_english_spelling.json",
               {"_provenance": note + OPENASR + " normalizer/english_abbreviations.py",
                **abbr.english_spelling_normalizer})
    write_json(TABLES / "openasr_english_names.json",
               {"_provenance": note + OPENASR + " normalizer/english_abbreviations.py",
                **abbr.english_name_normalizer})
    write_json(TABLES / "openasr_english_compounds.json",
               {"_provenance": note + OPENASR + " normalizer/english_abbreviations.py",
                "patterns": list(abbr.english_compound_normalizer.items())})


def write_golden(name: str, upstream: str, call, inputs: list) -> None:
    cases = [[*item, call(*item)] if isinstance(item, tuple) else [item, call(item)] for item in inputs]
    write_json(GOLDEN / f"{name}.json", {"_provenance": f"generated by eval/normalizers/make_golden.py "
                                         f"running {upstream}", "cases": cases})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", type=Path, required=True)
    parser.add_argument("--openasr", type=Path, required=True)
    parser.add_argument("--openasr-2024", type=Path, required=True)
    args = parser.parse_args()

    whisper = load_package("upstream_whisper_normalizers", args.whisper / "whisper/normalizers")
    oal_2024 = load_openasr(args.openasr_2024, "upstream_oal_2024")
    oal_2024_text = oal_2024.EnglishTextNormalizer()
    oal = load_openasr(args.openasr, "upstream_oal")
    write_tables(args.whisper, oal, oal_2024)

    english = english_inputs(args.whisper)
    multi = multi_inputs()
    ml = oal.data_utils.MultilingualNormalizer(remove_diacritics=False)
    write_golden("whisper-english@1", WHISPER, whisper.EnglishTextNormalizer(), english)
    write_golden("openasr-english@1", OPENASR_2024, oal_2024_text, english)
    write_golden("openasr-english@2", OPENASR, oal.EnglishTextNormalizer(), english)
    write_golden("basic@1", WHISPER, whisper.BasicTextNormalizer(), [t for _, t in multi] + english)
    write_golden("openasr-multilingual@1", OPENASR, lambda lang, text: ml(text, lang=lang),
                 multi + [("en", t) for t in english[:80]])

    from golden_scores import write_scoring_golden  # noqa: E402  (sibling script, needs the modules above)

    write_scoring_golden(oal, ROOT / "tests/data/scoring/openasr_golden.json", OPENASR)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
