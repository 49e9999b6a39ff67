"""The tiny training corpus and model that tests/test_training.py and tests/test_encoder_cache.py share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speechkit.testing.audio import speechlike
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.config import ModelSpec, StageConfig, TrainConfig
from speechkit.training.ctc import CtcUnits
from speechkit.training.data.tokenizer import train_tokenizer
from speechkit.training.model_init import build_model, official_config
from speechkit.training.trainer import TrainSetup

TEXTS = [
    ("en", "de", "Choose Format - Cells.", "Wählen Sie Format - Zellen."),
    ("de", "en", "Klicken Sie auf OK.", "Click OK."),
    ("en", "fr", "Open the file menu.", "Ouvrez le menu fichier."),
    ("fr", "en", "Fermez la fenêtre.", "Close the window."),
]
SPEC = ModelSpec(encoder_dim=32, encoder_heads=2, encoder_blocks=1, encoder_linear_units=32, conv_channels=16,
                 decoder_dim=32, decoder_layers=1, decoder_heads=2, decoder_kv_heads=1, intermediate_size=48,
                 lora_rank=4, lora_alpha=8.0)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (src, tgt, text, translation) in enumerate(TEXTS * 2):
        path = root / f"a{i}.flac"
        sf.write(path, speechlike(0.6 + 0.1 * i, seed=i), 16000)
        rows.append({"id": f"u{i}", "audio_filepath": path.name, "duration": 0.6 + 0.1 * i, "src_lang": src,
                     "tgt_lang": tgt, "text": text, "translation": translation,
                     "phonemes": "ˈ" + text.lower().replace("o", "ɔ")})  # stands in for espeak-ng's IPA  # fmt: skip
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_tokenizer([t for r in rows for t in (r["text"], r["translation"])], root / "tok", vocab_size=400)
    return root


def tiny_setup(corpus: Path) -> TrainSetup:
    tokenizer = Tokenizer.from_dir(corpus / "tok")
    official = official_config(SPEC, tokenizer, 400)
    model = build_model(official, tokenizer, SPEC.init_std, seed=0)
    return TrainSetup(model, official, tokenizer, corpus / "tok", torch.device("cpu"))


def stage_config(**stage) -> TrainConfig:
    text = StageConfig("text", "text", ("decoder",), max_steps=2, lr=3e-3, warmup_steps=1, batch_tokens=64)
    speech = StageConfig("speech", "speech", ("encoder", "projector", "lora"), lora=True,
                         tasks={"asr": 1.0, "ast": 1.0, "ast_cot": 1.0}, warmup_steps=1, lr=3e-3,
                         batch_seconds=2.5, init_feature_stats=True, ctc_weight=0.3,
                         **{"max_steps": 4, **stage})  # fmt: skip
    return TrainConfig(stages=(text, speech), precision="fp32", log_every=1)


def losses_of(history: list[dict]) -> dict[int, float]:
    return {e["global_step"]: e["loss"] for e in history if "loss" in e}


def speech_batch_of(corpus: Path, setup: TrainSetup, tasks: list[str], units: CtcUnits | None = None):
    from speechkit.audio import LogMelFrontend
    from speechkit.text.prompts import Task
    from speechkit.training.batches import read_rows, speech_batch

    rows = read_rows(corpus / "train.jsonl", True)[: len(tasks)]
    return speech_batch(rows, [Task(t) for t in tasks], setup.tokenizer, LogMelFrontend("cpu"), ctc=units)
