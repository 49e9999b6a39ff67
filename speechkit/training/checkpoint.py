"""Training checkpoints: the model in the official layout plus a training state for exact resume.

A checkpoint directory is loadable by ``speechkit.load`` / ``speechkit transcribe --model DIR`` as is
(config.json, generation_config.json, preprocessor_config.json, tokenizer, index and safetensors
shards, in ``save_dtype``). Beside it, ``training_state.safetensors`` holds what the shards cannot:
the fp32 master weights, the optimizer moments and the RNG states; ``training_state.json`` holds
the position (stage, step, epoch, batch, clock), the run's configs and the metrics so far.
Safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from speechkit.errors import CheckpointError
from speechkit.model.checkpoint import INDEX_FILE
from speechkit.model.convert_official import ours_to_official
from speechkit.testing.checkpoint import PREPROCESSOR_CONFIG

STATE_FORMAT = 1
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
TOKENIZER_FILES = ("tokenizer.json", "generation_config.json")
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Position:
    """Where training stands: stage index, steps done in it and overall, the data position (epoch
    and next batch of the stage's plan) and the stage's training seconds so far."""

    stage: int = 0
    step: int = 0
    global_step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0


def save_official(
    model: nn.Module, official: dict[str, Any], tokenizer_dir: Path, out: Path, dtype: str, shard_mb: int,
    key_map: Callable[[str], str] = ours_to_official,
) -> Path:
    """Write ``model`` in the official layout: shards of at most ``shard_mb`` MiB, index, configs, tokenizer.

    ``key_map`` names each tensor (the merged export writes plain ``...qkv_proj.weight`` names)."""
    out.mkdir(parents=True, exist_ok=True)
    limit = shard_mb * 2**20
    tensors = {key_map(k): v.detach().to("cpu", _DTYPES[dtype]).contiguous()
               for k, v in model.state_dict().items()}  # fmt: skip
    groups: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    weight_map = {}
    for n, keys in enumerate(groups, start=1):
        name = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: tensors[k] for k in keys}, str(out / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(keys, name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(out / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(out / "config.json", {**official, "torch_dtype": dtype})
    _write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out / name)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def save_training_state(
    out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, names: list[str],
    position: Position, meta: dict[str, Any], extra: dict[str, nn.Module] | None = None,
) -> None:  # fmt: skip
    """Master weights, the optimizer's per-parameter state (``names`` in its parameter order), RNG
    states and the JSON side (position, ``meta``: configs, metrics). ``extra`` maps a name prefix to a
    training-only module (not in the exported model) whose weights are saved under that prefix."""
    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for prefix, module in (extra or {}).items():
        tensors |= {f"param.{prefix}{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, param in zip(names, params, strict=True):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"optim.{name}.{key}"] = value.detach().cpu().reshape(value.shape).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tmp = out / f".{STATE_TENSORS}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / STATE_TENSORS)
    info = {"format_version": STATE_FORMAT, "position": position.__dict__, **meta}
    _write_json(out / STATE_JSON, info)


def read_training_meta(ckpt: Path) -> dict[str, Any]:
    """The JSON side of a training state (position, configs, metrics)."""
    path = ckpt / STATE_JSON
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: no {STATE_JSON}; not a resumable training checkpoint")
    info = json.loads(path.read_text("utf-8"))
    if info.get("format_version") != STATE_FORMAT:
        raise CheckpointError(f"{path}: format_version {info.get('format_version')}, expected {STATE_FORMAT}")
    return info


def load_model_state(
    ckpt: Path, model: nn.Module, extra: dict[str, nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """Restore the master weights (of ``model`` and the ``extra`` modules, as saved) and RNG states;
    returns the tensors (the optimizer part is read later)."""
    tensors = load_file(str(ckpt / STATE_TENSORS))
    state = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    for prefix, module in (extra or {}).items():
        own = {k: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        _load_strict(ckpt, module, {k[len(prefix) :]: v for k, v in own.items()})
    _load_strict(ckpt, model, state)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return tensors


def _load_strict(ckpt: Path, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: training state does not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")  # fmt: skip


def load_optimizer_state(tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    """Put the saved AdamW moments and step counts back on the parameters they belong to."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # fused and capturable AdamW keep their step counts on the parameters' device, the loop on the host
    on_device = optimizer.defaults.get("fused") or optimizer.defaults.get("capturable")
    for name, param in zip(names, params, strict=True):
        prefix = f"optim.{name}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            optimizer.state[param] = {
                k: v.to(param.device) if v.ndim or on_device else v.clone() for k, v in state.items()
            }


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``run_dir/checkpoints`` (highest global step), or None."""
    found = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / STATE_JSON).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def checkpoint_dir(run_dir: Path, global_step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{global_step:07d}"

