"""Open a suite's set under ``--data-root`` with the right reader (layout in :mod:`speechkit.suites`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from speechkit.data import (
    Utterance,
    find_commonvoice,
    read_commonvoice,
    read_covost,
    read_fleurs,
    read_manifest,
    read_openasr_parquet,
)
from speechkit.suites import SetSpec


def open_set(spec: SetSpec, data_root: str | Path) -> Iterator[Utterance]:
    """Utterances of ``spec``, read lazily from its corpus under ``data_root``."""
    root = Path(data_root)
    a = spec.args
    if spec.reader == "commonvoice":
        return read_commonvoice(find_commonvoice(root / "commonvoice"), a["locale"], a.get("split", "test"))
    if spec.reader == "fleurs":
        return read_fleurs(root / "fleurs", a["lang_code"], a.get("split", "test"), a.get("translate_to"))
    if spec.reader == "covost":
        base = root / "covost2"
        return read_covost(base, base / a["src"] / "clips", a["src"], a["tgt"], a.get("split", "test"))
    if spec.reader == "openasr":
        return read_openasr_parquet(root / "openasr" / a["path"], spec.src_lang)
    return read_manifest(root / a["path"], spec.src_lang)
