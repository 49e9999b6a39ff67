"""Fine-tune the speech LoRA and projector of a Phi-4-multimodal checkpoint on JSONL manifests.

    python3 recipes/finetune_lora/finetune.py --model CKPT --train train.jsonl --dev dev.jsonl --out runs/ft
    torchrun --nproc_per_node 8 recipes/finetune_lora/finetune.py ...same arguments...

Rerunning the same command resumes from the newest checkpoint in --out/run. The result is written to
--out/model (official layout, with a PEFT adapter in --out/model/speech-lora).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from speechkit.errors import SpeechkitError
from speechkit.training.export import export_run
from speechkit.training.finetune import Ranks, finetune, load_for_finetuning
from speechkit.training.finetune_config import load_finetune_config
from speechkit.training.finetune_data import read_examples
from speechkit.training.optim import select_trainable

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="official-layout checkpoint directory")
    parser.add_argument("--train", type=Path, required=True, help="JSONL manifest (records schema)")
    parser.add_argument("--dev", type=Path, help="JSONL manifest for dev WER and early stopping")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--stop-at-step", type=int, help="save and exit after this step (as a kill would)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (finetune.stage.lr=5e-5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ranks = Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
    if ranks.world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        run(args, ranks)
    except SpeechkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if ranks.world > 1:
            dist.destroy_process_group()
    return 0


def run(args: argparse.Namespace, ranks: Ranks) -> None:
    cfg = load_finetune_config(args.config, args.overrides)
    torch.manual_seed(cfg.seed)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    train, dev = read_examples(args.train), read_examples(args.dev) if args.dev else []
    loaded = load_for_finetuning(args.model, cfg, device)
    run_dir = args.out / "run"
    log_file = run_dir / "history.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)

    def on_record(entry: dict) -> None:
        with log_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    progress = finetune(cfg, loaded, train, dev, run_dir, device, ranks, stop_at_step=args.stop_at_step,
                        on_record=on_record)  # fmt: skip
    if ranks.rank == 0 and (args.stop_at_step is None or progress.step < args.stop_at_step):
        names = list(select_trainable(loaded.model, cfg.stage))
        print(export_run(loaded.model, loaded.root, run_dir, args.out / "model", names, cfg.save_dtype))


if __name__ == "__main__":
    sys.exit(main())
