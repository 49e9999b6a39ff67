"""Near-duplicate clustering of sentences: MinHash candidates, exact Jaccard check, union-find clusters.

Help text repeats itself with one word changed ("Select the rows ..." / "Select the columns ...").
Keeping one sentence per cluster makes the corpus less repetitive and, because it runs before the
split, makes sure no test sentence has a near-twin in training. Everything is deterministic: hashes
are CRC32 with fixed coefficients, never Python's salted ``hash``.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")
_PRIME = (1 << 31) - 1
_BANDS, _ROWS = 10, 3  # a pair at Jaccard 0.7 becomes a candidate with p = 1 - (1 - 0.7**3)**10 = 0.985


def words(text: str) -> frozenset[str]:
    """The comparison unit: the set of case-folded words, every digit run read as one placeholder."""
    return frozenset(re.sub(r"\d+", "0", w) for w in _WORD.findall(text.casefold()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def _signatures(sets: Sequence[frozenset[str]]) -> np.ndarray:
    rng = np.random.default_rng(0)  # fixed: signatures must not change between runs
    a = rng.integers(1, _PRIME, size=_BANDS * _ROWS, dtype=np.int64)
    b = rng.integers(0, _PRIME, size=_BANDS * _ROWS, dtype=np.int64)
    out = np.full((len(sets), _BANDS * _ROWS), _PRIME, dtype=np.int64)
    for i, s in enumerate(sets):
        if s:
            x = np.fromiter((zlib.crc32(w.encode()) for w in s), dtype=np.int64, count=len(s))
            out[i] = ((a[:, None] * x[None, :] + b[:, None]) % _PRIME).min(axis=1)
    return out  # (n_sentences, bands * rows)


def near_duplicate_clusters(texts: Sequence[str], threshold: float = 0.7) -> list[int]:
    """Cluster label per text: texts whose word sets have Jaccard >= ``threshold`` share a label (transitively).

    The label of a cluster is the index of its first member, so ``label == index`` marks the one text
    to keep. Candidates come from MinHash banding; each candidate pair is confirmed by exact Jaccard.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    sets = [words(t) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    signatures = _signatures(sets)
    for band in range(_BANDS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, row in enumerate(signatures[:, band * _ROWS:(band + 1) * _ROWS]):
            buckets[row.tobytes()].append(i)
        for members in buckets.values():
            for k, i in enumerate(members[1:], start=1):
                for j in members[:k]:
                    ri, rj = find(i), find(j)
                    if ri != rj and jaccard(sets[i], sets[j]) >= threshold:
                        parent[max(ri, rj)] = min(ri, rj)  # the earlier text stays the representative
    return [find(i) for i in range(len(texts))]
