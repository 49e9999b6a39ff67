"""``prepare``: the demo corpus from Debian's LibreOffice help, as one JSONL manifest per split.

Stages: download and unpack the help packages (cached), pair English<->X paragraphs by id, clean,
make the ja/zh readings, drop near-duplicate English sentences, split by English sentence, assign
voices, add spliced train sentences (``splice``). Writes ``<out>/{train,dev,test}.jsonl`` (rows in
the records schema plus the synthesizer's ``speak``, ``voice``, ``speed``, ``pitch``; ``duration`` is
filled by synthesis), the MPL-2.0 notices of the text, and ``prepare.meta.json`` with the config and
counts. Rerunning with the same packages and config gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path

from speechkit.scoring.records import iter_records
from speechkit.training.data.config import DataConfig
from speechkit.training.data.corpus import build_groups, drop_near_duplicates
from speechkit.training.data.lohelp import (
    fetch_help,
    help_dir,
    package_name,
    package_version,
    pair_paragraphs,
    read_help,
)
from speechkit.training.data.splice import spliced_rows
from speechkit.training.data.split import SPLITS, split_groups, utterance_rows

log = logging.getLogger(__name__)
MPL_TEXT = Path("/usr/share/common-licenses/MPL-2.0")


def prepare(cfg: DataConfig, out: Path, cache: Path, workers: int = 2) -> dict[str, Path]:
    """Build the manifests into ``out`` from help packages cached in ``cache``; returns split -> manifest."""
    root = fetch_help(list(cfg.langs), cache)
    with Pool(max(1, workers)) as pool:
        texts = pool.map(read_help, [help_dir(root, lang) for lang in cfg.langs])
    paragraphs = dict(zip(cfg.langs, texts, strict=True))
    pairs = {lang: pair_paragraphs(paragraphs["en"], paragraphs[lang]) for lang in cfg.langs if lang != "en"}
    groups = build_groups(pairs, cfg.clean)
    kept = drop_near_duplicates(groups, cfg.near_duplicate_jaccard)
    log.info("%d English sentence groups, %d after near-duplicate filtering", len(groups), len(kept))
    split = split_groups(kept, cfg)
    per_lang = {"train": cfg.train_per_lang, "dev": cfg.dev_per_lang, "test": cfg.test_per_lang}
    out.mkdir(parents=True, exist_ok=True)
    manifests, counts = {}, {}
    for name in SPLITS:
        rows = utterance_rows(getattr(split, name), name, per_lang[name], cfg)
        if name == "train" and cfg.spliced_per_lang:
            rows += spliced_rows(rows, cfg.spliced_per_lang, cfg)
        manifests[name] = write_manifest(rows, out / f"{name}.jsonl")
        counts[name] = dict(sorted(Counter(r["src_lang"] for r in rows).items()))
        log.info("%s: %d utterances %s", name, len(rows), counts[name])
    write_notices(cfg.langs, cache, root, out)
    meta = {
        "config": asdict(cfg),
        "groups": {"cleaned": len(groups), "after_near_duplicates": len(kept),
                   **{name: len(getattr(split, name)) for name in SPLITS}},
        "utterances": counts,
        "packages": {package_name(lang): package_version(cache, lang) for lang in cfg.langs},
    }  # fmt: skip
    (out / "prepare.meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", "utf-8")
    return manifests


def write_manifest(rows: list[dict], path: Path) -> Path:
    """Write rows as JSONL atomically, then read them back through the records reader to validate."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(tmp, path)
    for _ in iter_records(path):  # malformed or duplicate rows fail here, not in training
        pass
    return path


def write_notices(langs: tuple[str, ...], cache: Path, root: Path, out: Path) -> None:
    """Copy each package's Debian ``copyright`` file and the MPL-2.0 text next to the manifests."""
    licenses = out / "licenses"
    licenses.mkdir(exist_ok=True)
    lines = ["The sentences in these manifests are paragraphs of the LibreOffice help, taken from these",
             "Debian packages. LibreOffice help is licensed under the Mozilla Public License 2.0 (MPL-2.0);",
             "see licenses/MPL-2.0 and each package's copyright file in licenses/.", ""]  # fmt: skip
    for lang in langs:
        name = package_name(lang)
        lines.append(f"{name} {package_version(cache, lang)}")
        src = root / "usr/share/doc" / name / "copyright"
        if src.is_file():
            shutil.copyfile(src, licenses / f"{name}.copyright")
    if MPL_TEXT.is_file():
        shutil.copyfile(MPL_TEXT, licenses / "MPL-2.0")
    else:
        log.warning("%s not found: add the MPL-2.0 text to %s by hand", MPL_TEXT, licenses)
    (out / "NOTICE").write_text("\n".join(lines) + "\n", "utf-8")
