"""Does the demo encoder learn CTC on a small synthesized subset? A CPU probe before spending GPU time.

    python3 recipes/synthetic_demo/ctc_probe.py --prepared PREPARED --audio AUDIO [--langs en de ...] \
        --steps 1000 --lr 1e-3 [--units chars|phonemes --upsample 3] [--init recipe|torch] [--batch-seconds 20]

Trains only the encoder of the recipe's model (``config.yaml``'s ``model`` section) with the training-only
CTC head (:mod:`speechkit.training.ctc`) on the synthesized ``train`` rows of the chosen languages
(features computed once, no SpecAugment), and prints every ``--every`` steps the train and dev CTC (nats
per label) and the dev label error rate of the greedy CTC output (edit distance / reference labels, first
40 dev utterances). Leaving the plateau shows as that rate falling below ~0.9. ``--init recipe`` is the
recipe's init (:func:`speechkit.training.model_init.init_weights_`); ``--init torch`` keeps PyTorch's
default init in the encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch

from speechkit.audio import LogMelFrontend, load_audio
from speechkit.model.config import SpeechModelConfig
from speechkit.model.encoder import EncoderOutput
from speechkit.model.speech_model import SpeechModel
from speechkit.scoring.metrics import count_errors
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.batches import read_rows
from speechkit.training.config import load_train_config
from speechkit.training.ctc import CtcHead, CtcUnits
from speechkit.training.model_init import build_model, official_config, set_feature_stats_
from speechkit.training.trainer import DataPaths, ctc_units

HERE = Path(__file__).resolve().parent


def _examples(manifest: Path, langs: set[str], units: CtcUnits, frontend: LogMelFrontend) -> list:
    out = []
    for row in read_rows(manifest, True):
        if row.src_lang in langs:
            wave = load_audio(row.audio)
            labels = torch.tensor(units.encode(row.text, units.reading_of(row)))
            out.append((frontend.utterance(wave.samples, wave.sample_rate), labels))
    return out


def _batches(examples: list, seconds: float) -> list[list[int]]:
    order = sorted(range(len(examples)), key=lambda i: examples[i][0].shape[0])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * examples[i][0].shape[0] / 100 > seconds:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared text (holds tokenizer/)")
    parser.add_argument("--audio", type=Path, required=True, help="synthesized audio (train.jsonl, dev.jsonl)")
    parser.add_argument("--langs", nargs="+", default=["en"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--units", choices=["tokens", "chars", "phonemes"], default="chars")
    parser.add_argument("--upsample", type=int, default=3)
    parser.add_argument("--init", choices=["recipe", "torch"], default="recipe")
    parser.add_argument("--batch-seconds", type=float, default=20.0)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_train_config(HERE / "config.yaml", [])
    tokenizer = Tokenizer.from_dir(args.prepared / "tokenizer")
    vocab = len(json.loads((args.prepared / "tokenizer" / "tokenizer.json").read_text("utf-8"))["model"]["vocab"])
    official = official_config(recipe.model, tokenizer, vocab)
    if args.init == "recipe":
        model = build_model(official, tokenizer, recipe.model.init_std, seed=0)
    else:
        torch.manual_seed(0)
        model = SpeechModel(SpeechModelConfig.from_official(official), tokenizer.special.audio)
    encoder = model.audio.encoder.train()
    cfg = dataclasses.replace(recipe.train, ctc_units=args.units)
    units = ctc_units(cfg, tokenizer, vocab, DataPaths(text=args.prepared / "train.jsonl"))
    frontend = LogMelFrontend("cpu")
    train = _examples(args.audio / "train.jsonl", set(args.langs), units, frontend)
    dev = _examples(args.audio / "dev.jsonl", set(args.langs), units, frontend)[:40]
    first = train[:64]
    lengths = torch.tensor([f.shape[0] for f, _ in first])
    set_feature_stats_(model, torch.nn.utils.rnn.pad_sequence([f for f, _ in first], batch_first=True), lengths)
    head = CtcHead(recipe.model.encoder_dim, units, args.upsample, seed=0)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def encode(items: list) -> EncoderOutput:
        feats = torch.nn.utils.rnn.pad_sequence([f for f, _ in items], batch_first=True)
        return encoder(feats, torch.tensor([f.shape[0] for f, _ in items]))

    def ctc(items: list, encoded: EncoderOutput) -> torch.Tensor:
        rows = torch.ones(len(items), dtype=torch.bool)
        targets, target_lengths = torch.cat([t for _, t in items]), torch.tensor([len(t) for _, t in items])
        return head.loss(encoded, rows, targets, target_lengths)

    batches = _batches(train, args.batch_seconds)
    rng = random.Random(0)
    print(f"{len(train)} train / {len(dev)} dev utterances, {units.size} labels, {len(batches)} batches per epoch",
          flush=True)  # fmt: skip
    start, step = time.perf_counter(), 0
    while step < args.steps:
        rng.shuffle(batches)
        for batch in batches:
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
            items = [train[i] for i in batch]
            loss = ctc(items, encode(items))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            if step % args.every == 0 or step == 1:
                with torch.no_grad():
                    encoder.eval()
                    encoded = encode(dev)
                    dev_loss = ctc(dev, encoded)
                    best = head.greedy(encoded)
                    encoder.train()
                rate = count_errors([[str(i) for i in t.tolist()] for _, t in dev],
                                    [[str(i) for i in b] for b in best]).rate  # fmt: skip
                print(f"step {step} train {loss.item():.3f} dev {dev_loss.item():.3f} label error {rate:.3f} "
                      f"{time.perf_counter() - start:.0f}s | {units.decode(best[0])[:70]}", flush=True)  # fmt: skip
            if step >= args.steps:
                break
    print("reference:", units.decode(dev[0][1].tolist()))


if __name__ == "__main__":
    main()
