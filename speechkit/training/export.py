"""Exports of a fine-tuned speech LoRA: official layout, PEFT adapter folder, merged checkpoint.

1. :func:`write_official` — the base checkpoint rewritten shard by shard with the trained tensors
   replaced under their released names (``model.layers.N.self_attn.qkv_proj.lora_A.speech.weight``,
   ``...audio_projection.speech.0.weight``); every other tensor (vision tower and LoRA included) and
   every other file and folder (but ``speech-lora/``, rewritten by :func:`write_peft_adapter`) are copied
   unchanged, so it should load wherever the released checkpoint loads.
2. :func:`write_peft_adapter` — ``speech-lora/adapter_model.safetensors`` + ``adapter_config.json``
   with PEFT's names ``base_model.model.model.layers.N.<module>.lora_A.weight`` (the layout of the
   released ``speech-lora`` folder that vLLM's LoRA loader reads). It holds the LoRA only: a trained
   projector lives in the official-layout checkpoint, which is then the base model.
3. :func:`merge_lora_checkpoint` (``speechkit merge-lora SRC DST``) — the speech path with the LoRA
   folded in (fp32 merge, then the checkpoint dtype), plain ``...qkv_proj.weight`` names, no LoRA and
   no vision keys, and ``config.json`` marked ``speechkit_format: MERGED_FORMAT`` so the loader builds
   a decoder without adapters. A speechkit format: the official remote code does not read it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from speechkit.errors import CheckpointError
from speechkit.model.checkpoint import INDEX_FILE, weight_map
from speechkit.model.config import MERGED_FORMAT
from speechkit.model.convert_official import ours_to_official
from speechkit.model.loader import load_speech_model
from speechkit.model.speech_model import SpeechModel
from speechkit.training.checkpoint import _DTYPES, save_official

PEFT_PREFIX = "base_model.model."
ADAPTER_DIR = "speech-lora"


def write_official(base: Path, out: Path, model: SpeechModel, names: list[str]) -> Path:
    """Copy checkpoint ``base`` to ``out`` with the tensors ``names`` (speechkit names) taken from
    ``model``, each cast to the dtype it has in ``base``. Peak memory: one shard."""
    updates = {ours_to_official(n): t for n, t in model.state_dict().items() if n in set(names)}
    mapping = weight_map(base)
    absent = sorted(set(updates) - set(mapping))
    if absent:
        raise CheckpointError(f"{base}: has no tensor {absent[0]!r} to replace; fine-tune from this checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    for shard in sorted(set(mapping.values())):
        tensors = load_file(str(shard))
        for key in tensors.keys() & updates.keys():
            tensors[key] = updates[key].detach().to("cpu", tensors[key].dtype).contiguous()
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})
    shard_names = {p.name for p in mapping.values()}
    for path in base.iterdir():
        if path.is_file() and path.name not in shard_names:
            shutil.copyfile(path, out / path.name)
        elif path.is_dir() and path.name != ADAPTER_DIR:  # e.g. the released vision-lora/ folder
            shutil.copytree(path, out / path.name, dirs_exist_ok=True)
    return out


def write_peft_adapter(model: SpeechModel, out: Path, dtype: str, base_model: str) -> Path:
    """The speech LoRA as a PEFT adapter folder ``out`` (keys and config: see the module docstring)."""
    lora = model.config.speech_lora
    if lora is None or model.decoder.lora_state != "unmerged":
        raise CheckpointError("the model has no unmerged speech LoRA to export")
    tensors = {}
    for name, value in model.state_dict().items():
        if name.endswith((".lora_a", ".lora_b")):
            key = ours_to_official(name).replace(".speech.weight", ".weight")  # lora_A.speech.weight -> lora_A.weight
            tensors[PEFT_PREFIX + key] = value.detach().to("cpu", _DTYPES[dtype]).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lora.rank, "lora_alpha": _peft_alpha(lora.alpha), "lora_dropout": lora.dropout, "bias": "none",
        "target_modules": list(lora.targets), "modules_to_save": None, "inference_mode": True,
    }  # fmt: skip
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    return out


def _peft_alpha(alpha: float) -> int | float:
    # PEFT's LoraConfig and vLLM's PEFTHelper type lora_alpha as int; the released config.json speech_lora has 640
    return int(alpha) if float(alpha).is_integer() else alpha


def merge_lora_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the merged export of official-layout checkpoint ``src`` to ``dst`` (see the module docstring)."""
    src, dst = Path(src), Path(dst)
    loaded = load_speech_model(src, dtype=torch.float32, lora="unmerged")
    if loaded.config.speech_lora is None:
        raise CheckpointError(f"{src}: has no speech LoRA to merge")
    loaded.model.decoder.merge_lora_()  # in fp32: one rounding, to the checkpoint dtype on save
    official = json.loads((loaded.root / "config.json").read_text("utf-8"))
    official["speechkit_format"] = MERGED_FORMAT
    dtype = loaded.config.dtype if loaded.config.dtype in _DTYPES else "bfloat16"
    save_official(loaded.model, official, loaded.root, dst, dtype, shard_mb=4096, key_map=_merged_name)
    for path in loaded.root.iterdir():  # tokenizer and processor files the writer does not produce
        weights = path.suffix == ".safetensors" or path.name == INDEX_FILE
        if path.is_file() and not weights and not (dst / path.name).exists():
            shutil.copyfile(path, dst / path.name)
    return dst


def _merged_name(name: str) -> str:
    return ours_to_official(name).replace(".base_layer.weight", ".weight")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-lora", help="fold the speech LoRA into the weights (merged export, no LoRA keys)",
        description="Write the merged export of SRC (official layout with a speech LoRA) to DST: the LoRA folded "
        "into the decoder weights (fp32 merge, then the checkpoint dtype), no LoRA or vision keys, config.json "
        f"marked speechkit_format={MERGED_FORMAT} (see recipes/finetune_lora/README.md).",
    )  # fmt: skip
    parser.add_argument("src", type=Path, help="official-layout checkpoint with a speech LoRA")
    parser.add_argument("dst", type=Path, help="output folder")
    parser.set_defaults(run=lambda args: print(merge_lora_checkpoint(args.src, args.dst)) or 0)


def export_run(model: SpeechModel, base: Path, run_dir: Path, out: Path, names: list[str], dtype: str) -> Path:
    """The run's result in ``out``: official layout with the best dev checkpoint's trained tensors
    (``run_dir/best``, else the current ones) and its PEFT adapter in ``out/speech-lora``."""
    from speechkit.training.finetune import TRAINABLE_FILE, load_trainable

    best = run_dir / "best" / TRAINABLE_FILE
    if best.is_file():
        params = dict(model.named_parameters())
        load_trainable(best, {n: params[n] for n in names})
    write_official(base, out, model, names)
    write_peft_adapter(model, out / ADAPTER_DIR, dtype, str(base))
    return out
