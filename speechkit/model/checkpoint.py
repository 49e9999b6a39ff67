"""Reading official-layout checkpoints: locate files, check shards, load tensors with key accounting.

Safetensors only (never unpickle). Tensors are read shard by shard through memory maps, and only
the ones the caller's model holds: the vision tower is never read into memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from speechkit.errors import CheckpointError
from speechkit.model.convert_official import official_to_ours, ours_to_official

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def weight_map(root: Path) -> dict[str, Path]:
    """Official key -> shard path, from the index (or a single ``model.safetensors``)."""
    index = root / INDEX_FILE
    if index.is_file():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index}: malformed index ({err}); re-download the checkpoint") from None
        shards = {name: root / name for name in set(mapping.values())}
        for name, path in shards.items():
            if not name.endswith(".safetensors"):
                raise CheckpointError(
                    f"{index} points at {name}: speechkit loads safetensors only and never unpickles weights"
                )
            if not path.is_file():
                raise CheckpointError(
                    f"{path}: shard listed in {INDEX_FILE} is missing; re-download the checkpoint"
                )
        return {key: shards[name] for key, name in mapping.items()}
    single = root / SINGLE_FILE
    if single.is_file():
        with _open_shard(single) as f:
            return {key: single for key in f.keys()}
    pickles = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    if pickles:
        raise CheckpointError(
            f"{root} holds pickle weights ({', '.join(pickles[:3])}) and no safetensors: speechkit never "
            "unpickles checkpoints; convert them to safetensors first"
        )
    raise CheckpointError(
        f"{root}: no {INDEX_FILE} or {SINGLE_FILE}; point --model at a Phi-4-multimodal checkpoint"
    )


def check_shard(path: Path) -> None:
    """Fail early, naming the file, when a shard is truncated or its header is not safetensors."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a safetensors file ({err}); re-download it") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path}: truncated ({size} bytes, header needs {8 + header_len + end}); re-download this shard"
        )


def _open_shard(path: Path):
    check_shard(path)
    return safe_open(str(path), framework="pt", device="cpu")


def load_official_tensors(
    root: Path,
    expected: dict[str, torch.Size],
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    wanted: Callable[[str], bool] = lambda name: True,
    on_tensor: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Load the tensors of ``expected`` (speechkit name -> shape) from an official checkpoint.

    Args:
        root: checkpoint directory.
        expected: every tensor the model holds, by speechkit name, with its shape.
        dtype, device: where loaded tensors go (cast per tensor, so peak memory stays one shard's
            page cache plus the model).
        wanted: speechkit names this load is for (e.g. only ``audio.*``); known keys outside it
            are skipped without being read.
        on_tensor: optional hook (name, tensor) -> tensor applied after loading each tensor.

    Raises:
        CheckpointError: on an unknown key, a missing tensor or a shape mismatch, naming the key.
    """
    by_shard: dict[Path, list[tuple[str, str]]] = {}
    unexpected: list[str] = []
    for key, shard in weight_map(root).items():
        try:
            name = official_to_ours(key)
        except KeyError:
            unexpected.append(key)
            continue
        if name is None or not wanted(name):
            continue
        if name not in expected:
            unexpected.append(key)
            continue
        by_shard.setdefault(shard, []).append((key, name))
    if unexpected:
        raise CheckpointError(
            f"{root}: {len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]!r}; "
            "this is not a Phi-4-multimodal checkpoint speechkit knows"
        )
    missing = sorted(
        set(n for n in expected if wanted(n)) - {n for pairs in by_shard.values() for _, n in pairs}
    )
    if missing:
        raise CheckpointError(
            f"{root}: missing tensor {ours_to_official(missing[0])!r} (and {len(missing) - 1} more); "
            "the checkpoint is incomplete: re-download it"
        )
    state: dict[str, torch.Tensor] = {}
    for shard, pairs in by_shard.items():
        with _open_shard(shard) as f:
            for key, name in pairs:
                state[name] = _read(f, key, name, shard, expected[name], dtype, device, on_tensor)
    return state


def _read(f, key, name, shard, shape, dtype, device, on_tensor) -> torch.Tensor:
    found = tuple(f.get_slice(key).get_shape())
    if found != tuple(shape):
        raise CheckpointError(
            f"{shard.name}: tensor {key!r} has shape {list(found)}, expected {list(shape)} from config.json"
        )
    tensor = f.get_tensor(key).to(device=device, dtype=dtype)
    return on_tensor(name, tensor) if on_tensor else tensor


def shapes_of(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Size]:
    """Name -> shape of every parameter and persistent buffer (works on the meta device)."""
    return {prefix + k: v.shape for k, v in module.state_dict().items()}


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
