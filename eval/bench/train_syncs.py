"""Where a training step makes the host wait for the GPU: synchronisations per step, counted by call site.

    python eval/bench/train_syncs.py --out syncs.json [--steps 40] [--from-step 15]   # on a GPU

A step that synchronises cannot queue its kernels ahead of the device, so its time is host work plus device
work instead of the larger of the two. This trains the demo recipe's model size (``model`` of
``recipes/synthetic_demo/config.yaml``) on synthetic clips with the recipe's CTC-stage settings (bf16, audio
in memory, features on the device, the encoder from CUDA graphs, character CTC) and, from ``--from-step`` on
(after the graph captures), runs with ``torch.cuda.set_sync_debug_mode("warn")``: every synchronisation is
counted under its Python call stack. Prints and writes the per-step time and the sites.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import traceback
import warnings
from pathlib import Path

import soundfile as sf
import torch

from speechkit.testing.audio import speechlike
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.config import SpecAugmentConfig, StageConfig, TrainConfig, load_train_config
from speechkit.training.data.tokenizer import train_tokenizer
from speechkit.training.model_init import build_model, official_config
from speechkit.training.trainer import DataPaths, TrainSetup, train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "synthetic_demo" / "config.yaml"
TEXTS = ["Choose Format - Cells.", "Klicken Sie auf OK.", "Open the file menu.", "Fermez la fenêtre.",
         "Ouvrez le menu fichier.", "Wählen Sie Format - Zellen."]  # fmt: skip
CLIPS = 48


def _corpus(root: Path) -> Path:
    rows = []
    for i in range(CLIPS):
        seconds = 2.0 + (i % 7) * 0.5
        sf.write(root / f"a{i}.flac", speechlike(seconds, seed=i), 16000)
        text, translation = TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]
        rows.append({"id": f"u{i}", "audio_filepath": f"a{i}.flac", "duration": seconds, "src_lang": "en",
                     "tgt_lang": "de", "text": text, "translation": translation})  # fmt: skip
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_tokenizer(TEXTS, root / "tok", vocab_size=400)
    return root / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--from-step", type=int, default=15, help="count from this step on (after the captures)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("train_syncs.py counts CUDA synchronisations: run it on a GPU")

    root = Path(tempfile.mkdtemp())
    manifest = _corpus(root)
    tokenizer = Tokenizer.from_dir(root / "tok")
    spec = load_train_config(RECIPE).model
    official = official_config(spec, tokenizer, 400)
    setup = TrainSetup(build_model(official, tokenizer, spec.init_std, seed=0), official, tokenizer, root / "tok",
                       torch.device("cuda"))  # fmt: skip
    stage = StageConfig("ctc", "speech", ("encoder",), tasks={"asr": 1.0}, ce_weight=0.0, ctc_weight=1.0,
                        max_steps=args.steps, lr=1e-3, warmup_steps=1, batch_seconds=20.0,
                        init_feature_stats=True)  # fmt: skip
    cfg = TrainConfig(stages=(stage,), precision="bf16", log_every=5, audio_in_memory=True, features_on_device=True,
                      cuda_graphs_encoder=True, ctc_units="chars", ctc_upsample=3, edge_silence_s=0.5,
                      specaugment=SpecAugmentConfig(1, 10, 1, 20, 0.05))  # fmt: skip

    sites: collections.Counter[str] = collections.Counter()

    def count(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" in str(message).lower():
            frames = [f for f in traceback.extract_stack()[:-1] if "speechkit" in f.filename or "torch" in f.filename]
            sites[" <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames[::-1][:6])] += 1

    def on_record(entry: dict) -> None:
        if entry.get("step") == args.from_step and "loss" in entry:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")

    warnings.showwarning = count
    warnings.simplefilter("always")
    history = train(cfg, setup, DataPaths(train=manifest), root / "run", on_record=on_record)
    torch.cuda.set_sync_debug_mode(0)
    steps = [e for e in history if "loss" in e]
    first = next(e for e in steps if e["step"] >= args.from_step)
    counted = max(1, steps[-1]["step"] - first["step"])
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps_counted": counted,
              "ms_per_step": round((steps[-1]["elapsed_s"] - first["elapsed_s"]) / counted * 1000, 2),
              "syncs_per_step": round(sum(sites.values()) / counted, 1),
              "sites": dict(sites.most_common())}  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
