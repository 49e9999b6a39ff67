"""Scoring leaf: records, normalizers, metrics and protocols. Never imports the model.

Public API::

    from speechkit.scoring import read_records, score_records, get_normalizer
    result = score_records(read_records("run/cv15_de.jsonl"), protocol="paper")
    print(result.score, result.to_dict()["per_lang"])
"""

from speechkit.scoring.normalizers import get_normalizer, normalizer_id
from speechkit.scoring.protocols import PROTOCOLS, get_protocol
from speechkit.scoring.records import (
    Record,
    RecordWriter,
    iter_records,
    meta_path,
    read_meta,
    read_records,
    write_meta,
)
from speechkit.scoring.score import GroupScore, ScoreResult, score_records

__all__ = [
    "PROTOCOLS",
    "GroupScore",
    "Record",
    "RecordWriter",
    "ScoreResult",
    "get_normalizer",
    "get_protocol",
    "iter_records",
    "meta_path",
    "normalizer_id",
    "read_meta",
    "read_records",
    "score_records",
    "write_meta",
]
