"""Reading official-layout checkpoints: locate files, check shards, load tensors with key accounting.

Safetensors only (never unpickle). Tensors are read shard by shard, each straight into its own
buffer, and only the ones the caller's model holds: the vision tower is never read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch

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
                raise CheckpointError(f"{path}: shard listed in {INDEX_FILE} is missing; re-download the checkpoint")
        return {key: shards[name] for key, name in mapping.items()}
    single = root / SINGLE_FILE
    if single.is_file():
        return dict.fromkeys(read_header(single)[0], single)
    pickles = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    if pickles:
        raise CheckpointError(
            f"{root} holds pickle weights ({', '.join(pickles[:3])}) and no safetensors: speechkit never "
            "unpickles checkpoints; convert them to safetensors first"
        )
    raise CheckpointError(f"{root}: no {INDEX_FILE} or {SINGLE_FILE}; point --model at a Phi-4-multimodal checkpoint")


_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_header(path: Path) -> tuple[dict, int]:
    """(tensor header, byte offset of the data) of a safetensors file, checked against the file size.

    Fails early, naming the file, when a shard is truncated or its header is not safetensors.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a safetensors file ({err}); re-download it") from None
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path}: truncated ({size} bytes, header needs {8 + header_len + end}); re-download this shard"
        )
    return header, 8 + header_len


def load_official_tensors(
    root: Path,
    expected: dict[str, torch.Size],
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    wanted: Callable[[str], bool] = lambda name: True,
) -> dict[str, torch.Tensor]:
    """Load the tensors of ``expected`` (speechkit name -> shape) from an official checkpoint.

    Args:
        root: checkpoint directory.
        expected: every tensor the model holds, by speechkit name, with its shape.
        dtype, device: where loaded tensors go (read and cast one tensor at a time, so peak host
            memory is the model plus its largest tensor).
        wanted: speechkit names this load is for (e.g. only ``audio.*``); known keys outside it
            are skipped without being read.

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
    missing = sorted(set(n for n in expected if wanted(n)) - {n for pairs in by_shard.values() for _, n in pairs})
    if missing:
        raise CheckpointError(
            f"{root}: missing tensor {ours_to_official(missing[0])!r} (and {len(missing) - 1} more); "
            "the checkpoint is incomplete: re-download it"
        )
    state: dict[str, torch.Tensor] = {}
    for shard, pairs in by_shard.items():
        header, data_start = read_header(shard)
        # plain reads into fresh tensors, not a memory map: mapped pages would count towards the
        # process's resident memory for the whole shard and raise peak memory well above the model
        with shard.open("rb") as f:
            for key, name in pairs:
                tensor = _read(f, header[key], data_start, key, shard, expected[name])
                state[name] = tensor.to(device=device, dtype=dtype)
    return state


def _read(f, entry: dict, data_start: int, key: str, shard: Path, shape: torch.Size) -> torch.Tensor:
    if tuple(entry["shape"]) != tuple(shape):
        raise CheckpointError(
            f"{shard.name}: tensor {key!r} has shape {list(entry['shape'])}, expected {list(shape)} from config.json"
        )
    dtype = _DTYPES.get(entry["dtype"])
    if dtype is None:
        raise CheckpointError(f"{shard.name}: tensor {key!r} has unsupported dtype {entry['dtype']}")
    begin, end = entry["data_offsets"]
    tensor = torch.empty(tuple(shape), dtype=dtype)
    if end - begin != tensor.numel() * tensor.element_size():
        raise CheckpointError(f"{shard.name}: tensor {key!r} has {end - begin} bytes, expected {tensor.nbytes}")
    f.seek(data_start + begin)
    if tensor.numel() and f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != end - begin:
        raise CheckpointError(f"{shard.name}: tensor {key!r} could not be read whole; re-download this shard")
    return tensor


def shapes_of(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Size]:
    """Name -> shape of every parameter and persistent buffer (works on the meta device)."""
    return {prefix + k: v.shape for k, v in module.state_dict().items()}


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
