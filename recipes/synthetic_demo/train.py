"""Train the synthetic-demo model from scratch (all stages of config.yaml), resumably.

    python3 recipes/synthetic_demo/train.py --prepared data/synthetic_demo/prepared \
        --audio data/synthetic_demo/audio --out runs/demo [train.stages.1.max_steps=500 ...]

The text stage needs only the prepared text; speech stages wait (up to --wait-audio seconds) for the
synthesized train manifest, so synthesis can run beside the text stage. Rerunning the same command
resumes from the newest checkpoint in --out. --export copies the final model (official layout, no
training state) to a folder; --curves writes the training curves as PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from speechkit.errors import SpeechkitError
from speechkit.inference.pipeline import resolve_device
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.checkpoint import STATE_JSON, STATE_TENSORS, latest_checkpoint
from speechkit.training.config import load_train_config
from speechkit.training.curves import plot_history
from speechkit.training.model_init import build_model, count_parameters, official_config
from speechkit.training.trainer import DataPaths, TrainSetup, train

HERE = Path(__file__).resolve().parent
log = logging.getLogger("train")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/synthetic_demo/prepared"))
    parser.add_argument("--audio", type=Path, default=Path("data/synthetic_demo/audio"))
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic_demo"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--wait-audio", type=float, default=0.0, help="seconds to wait for audio/train.jsonl")
    parser.add_argument("--export", type=Path, help="copy the final model here (official layout)")
    parser.add_argument("--curves", type=Path, help="write the training curves to this PNG")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (train.seed=1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        run(args)
    except SpeechkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    recipe = load_train_config(args.config, args.overrides)
    tokenizer_dir = args.prepared / "tokenizer"
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text("utf-8"))["model"]["vocab"]
    official = official_config(recipe.model, tokenizer, len(vocab))
    model = build_model(official, tokenizer, recipe.model.init_std, recipe.train.seed)
    log.info("model: %.2f M parameters", count_parameters(model) / 1e6)
    setup = TrainSetup(model, official, tokenizer, tokenizer_dir, resolve_device(args.device))
    paths = DataPaths(args.prepared / "train.jsonl", args.audio / "train.jsonl", args.audio / "dev.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)

    def wait_for_audio(stage) -> None:
        deadline = time.monotonic() + args.wait_audio
        while stage.data == "speech" and not (paths.train.is_file() and paths.dev.is_file()):
            if time.monotonic() > deadline:
                raise SpeechkitError(f"{paths.train}: not there after {args.wait_audio:.0f} s; synthesize first")
            time.sleep(2)

    with (args.out / "history.jsonl").open("a", encoding="utf-8") as f:
        def on_record(entry: dict) -> None:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            log.info("%s", entry)

        history = train(recipe.train, setup, paths, args.out, on_record=on_record, before_stage=wait_for_audio)
    final = latest_checkpoint(args.out)
    if args.curves:
        plot_history(history, args.curves)
    if args.export and final is not None:
        shutil.copytree(final, args.export, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(STATE_TENSORS, STATE_JSON))  # fmt: skip
        log.info("exported %s -> %s", final, args.export)
    if torch.cuda.is_available():
        log.info("peak GPU memory %.2f GiB", torch.cuda.max_memory_allocated() / 2**30)


if __name__ == "__main__":
    sys.exit(main())
