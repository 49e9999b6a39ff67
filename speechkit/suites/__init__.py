"""Evaluation suites shipped as package data (``*.json`` here), mirroring the Phi-4-multimodal paper.

A suite is a list of sets. Each set names a reader and its arguments; corpora are found under
``--data-root`` at these relative paths:

==================  ======================================================================
``commonvoice/``    ``cv-corpus-15.0-*/<locale>/{clips/, test.tsv}`` (Common Voice 15 release)
``fleurs/``         ``data/<lang_code>/{test.tsv, audio/test.tar.gz}`` (hub layout)
``covost2/``        ``covost_v2.<src>_<tgt>.test.tsv`` and ``<src>/clips/`` (Common Voice 4 clips)
``openasr/``        ``<dataset>/<split>/*.parquet`` (hub parquet snapshots)
==================  ======================================================================

``paper`` holds the paper's published number for the set (Phi-4-MM, 0-shot; with CoT for ``_cot``
sets), shown beside ours in reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from speechkit.errors import DataError

READERS = ("commonvoice", "fleurs", "covost", "openasr", "manifest")


@dataclass(frozen=True)
class SetSpec:
    """One evaluation set: where its data is, what task, how it is scored and the paper's number."""

    name: str
    reader: str
    args: dict[str, Any]
    task: str
    src_lang: str
    tgt_lang: str | None = None
    protocol: str = "paper"
    paper: float | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    sets: list[SetSpec] = field(default_factory=list)


def available_suites() -> list[str]:
    """Names of the suites shipped with speechkit."""
    files = resources.files("speechkit.suites").iterdir()
    return sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json"))


def load_suite(name_or_path: str) -> Suite:
    """A packaged suite by name (see :func:`available_suites`) or a suite JSON file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".json") and path.is_file():
        text, origin = path.read_text("utf-8"), str(path)
    elif name_or_path in available_suites():
        origin = f"speechkit/suites/{name_or_path}.json"
        text = resources.files("speechkit.suites").joinpath(f"{name_or_path}.json").read_text("utf-8")
    else:
        raise DataError(f"unknown suite {name_or_path!r}; choose one of: {', '.join(available_suites())}")
    raw = json.loads(text)
    sets = []
    for i, item in enumerate(raw.get("sets", [])):
        if item.get("reader") not in READERS:
            raise DataError(f"{origin}: set {i} has reader {item.get('reader')!r}; use one of {READERS}")
        sets.append(SetSpec(**item))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise DataError(f"{origin}: set names repeat; each set writes <name>.jsonl, so they must be unique")
    return Suite(raw["name"], raw.get("description", ""), sets)
