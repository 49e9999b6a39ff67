"""Data-parallel transcription of large file lists under ``torchrun`` (one process per GPU).

Every rank reads the same file list, takes a length-balanced shard (longest-first onto the least
loaded rank, by duration from the file headers), decodes it and writes its results as JSON lines
to a shared folder; rank 0 waits for all ranks and emits every file in input order. One process
(no torchrun) behaves exactly as before.
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without torchrun)."""

    index: int
    world: int
    local: int

    @classmethod
    def from_env(cls) -> Rank:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip

    def device(self, requested: str) -> str:
        """One GPU per process: ``auto``/``cuda`` become ``cuda:<local rank>`` when CUDA is present, and that
        GPU becomes the process's current device (streams and CUDA graphs are made on the current device:
        without it, rank 1 captured its decode step on GPU 0's stream and failed)."""
        if self.world > 1 and requested in ("auto", "cuda") and torch.cuda.is_available():
            torch.cuda.set_device(self.local)
            return f"cuda:{self.local}"
        return requested


def shard_by_length(durations: list[float], world: int) -> list[list[int]]:
    """Indices per rank, balancing total duration: longest first onto the least loaded rank."""
    heap = [(0.0, rank) for rank in range(world)]
    shards: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(durations)), key=lambda i: -durations[i]):
        load, rank = heapq.heappop(heap)
        shards[rank].append(i)
        heapq.heappush(heap, (load + durations[i], rank))
    return [sorted(s) for s in shards]


class ShardResults:
    """Rank k writes ``rank-k.jsonl`` (``{"index", "record"}`` or ``{"index", "error"}`` per file)."""

    def __init__(self, folder: Path, rank: Rank) -> None:
        self.folder, self.rank = folder, rank
        folder.mkdir(parents=True, exist_ok=True)
        self.file = (folder / f"rank-{rank.index}.jsonl").open("w", encoding="utf-8")

    def add(self, index: int, record: dict | None = None, error: str | None = None) -> None:
        entry = {"index": index, "record": record} if error is None else {"index": index, "error": error}
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.file.flush()

    def gather(self) -> list[dict]:
        """Close this rank's file, wait for every rank; rank 0 gets all entries in input order."""
        self.file.close()
        dist.barrier()
        if self.rank.index != 0:
            return []
        entries = []
        for k in range(self.rank.world):
            lines = (self.folder / f"rank-{k}.jsonl").read_text(encoding="utf-8").splitlines()
            entries.extend(json.loads(line) for line in lines)
        return sorted(entries, key=lambda e: e["index"])
