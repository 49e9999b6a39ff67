"""Corpus readers: one function per published layout, each yielding :class:`Utterance` with 16 kHz audio.

Readers never import the model. Malformed rows fail with ``DataError("file:line: reason")``.
"""

from speechkit.data.commonvoice import find_commonvoice, read_commonvoice
from speechkit.data.covost import read_covost
from speechkit.data.fleurs import fleurs_sentences, read_fleurs
from speechkit.data.manifest import read_manifest
from speechkit.data.openasr import read_openasr_parquet
from speechkit.data.utterance import Utterance, iso_lang

__all__ = [
    "Utterance",
    "find_commonvoice",
    "fleurs_sentences",
    "iso_lang",
    "read_commonvoice",
    "read_covost",
    "read_fleurs",
    "read_manifest",
    "read_openasr_parquet",
]
