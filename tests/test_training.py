"""Training on a tiny model (CPU, seconds): loss falls, resume is bit-identical, checkpoints reload."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from training_helpers import SPEC, TEXTS, losses_of, speech_batch_of, stage_config, tiny_setup

from speechkit.errors import ConfigError
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike
from speechkit.training.batches import IGNORE
from speechkit.training.config import ModelSpec, SpecAugmentConfig, StageConfig, TrainConfig, apply_overrides, from_dict
from speechkit.training.ctc import CtcHead, CtcUnits
from speechkit.training.trainer import DataPaths, TrainSetup, _loss, train


def test_loss_falls_on_a_fixed_batch(corpus: Path, tmp_path: Path) -> None:
    # one batch holding every utterance, seen again each step: the loss must fall
    stage = StageConfig("fit", "speech", ("encoder", "projector", "decoder"), max_steps=8, lr=1e-2,
                        warmup_steps=1, min_lr_ratio=1.0, batch_seconds=100.0)
    cfg = TrainConfig(stages=(stage,), precision="fp32", log_every=1,
                      specaugment=SpecAugmentConfig(freq_masks=0, time_masks=0))
    history = train(cfg, tiny_setup(corpus), DataPaths(train=corpus / "train.jsonl"), tmp_path)
    losses = list(losses_of(history).values())
    assert len(losses) == 8
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize(("in_memory", "units"),
                         [(False, "tokens"), (True, "tokens"), (False, "chars"), (False, "phonemes")],
                         ids=["files", "memory+device-features", "char-ctc", "phoneme-ctc"])  # fmt: skip
def test_resume_gives_bit_identical_losses(corpus: Path, tmp_path: Path, in_memory: bool, units: str) -> None:
    paths = DataPaths(text=corpus / "train.jsonl", train=corpus / "train.jsonl")
    cfg = dataclasses.replace(stage_config(), audio_in_memory=in_memory, features_on_device=in_memory, ctc_units=units,
                              ctc_upsample=1 if units == "tokens" else 3)  # fmt: skip
    full = losses_of(train(cfg, tiny_setup(corpus), paths, tmp_path / "full"))
    # stop after step 4 (inside the speech stage, with optimizer moments), then resume in a fresh model
    train(cfg, tiny_setup(corpus), paths, tmp_path / "cut", stop_at_step=4)
    resumed = losses_of(train(cfg, tiny_setup(corpus), paths, tmp_path / "cut"))
    assert set(full) == {1, 2, 3, 4, 5, 6}
    for step in (5, 6):
        assert resumed[step] == full[step], (step, resumed[step], full[step])  # exact, not approximate


def test_checkpoint_reloads_with_the_same_logits(corpus: Path, tmp_path: Path) -> None:
    setup = tiny_setup(corpus)
    paths = DataPaths(text=corpus / "train.jsonl", train=corpus / "train.jsonl")
    cfg = TrainConfig(stages=stage_config().stages, precision="fp32", save_dtype="float32")
    train(cfg, setup, paths, tmp_path)
    final = sorted((tmp_path / "checkpoints").iterdir())[-1]
    export = tmp_path / "export"
    shutil.copytree(final, export, ignore=shutil.ignore_patterns("training_state.*"))
    loaded = load_speech_model(export, dtype=torch.float32, lora="unmerged")
    model = setup.model.eval()
    ids = torch.tensor([[4, 2, 2, 2, 9, 10, 3, 5, 11, 12]])
    feats = torch.from_numpy(np.random.default_rng(0).normal(8, 2, (1, 24, 80)).astype(np.float32))
    with torch.no_grad():
        outs = []
        for m in (model, loaded.model):
            embeds = m.embed_inputs(ids, m.audio(feats))
            outs.append(m.decoder.logits(m.decoder(embeds, torch.arange(ids.shape[1])[None])))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)
    assert loaded.tokenizer.special.audio == 2 and loaded.config.decoder.vocab_size == 400


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\]"):
        from_dict(ModelSpec, {"bogus": 1}, "model")
    with pytest.raises(ConfigError, match="trains 'lora' but has lora: false"):
        StageConfig("s", "speech", ("lora",))
    with pytest.raises(ConfigError, match="no key 'nope'"):
        apply_overrides({"train": {"seed": 0}}, ["train.nope.x=1"])
    raw = apply_overrides({"train": {"stages": [{"lr": 1.0}]}}, ["train.stages.0.lr=0.5"])
    assert raw["train"]["stages"][0]["lr"] == 0.5
    # YAML 1.1 parses 3e-4 as a string; a float field takes it as the number (run 16 died on it)
    stage = {"name": "s", "data": "text", "trainable": ["decoder"]}
    raw = apply_overrides({"stages": [stage]}, ["stages.0.lr=3e-4"])
    assert from_dict(TrainConfig, raw, "train").stages[0].lr == 3e-4
    with pytest.raises(ConfigError, match=r"train.stages.0.lr: expected a number, got 'fast'"):
        from_dict(TrainConfig, apply_overrides({"stages": [stage]}, ["stages.0.lr=fast"]), "train")


def _ctc_setup(corpus: Path) -> tuple[TrainSetup, CtcHead, TrainConfig, StageConfig]:
    setup = tiny_setup(corpus)
    head = CtcHead(SPEC.encoder_dim, CtcUnits.tokens(setup.tokenizer, 400), upsample=1, seed=0)
    cfg = TrainConfig(stages=stage_config().stages, precision="fp32", specaugment=SpecAugmentConfig(0, 0, 0, 0, 0.0))
    return setup, head, cfg, StageConfig(**{**stage_config().stages[1].__dict__, "ctc_weight": 0.0})


def test_ctc_term_adds_weighted_ctc_of_asr_rows_and_reaches_the_encoder(corpus: Path) -> None:
    setup, head, cfg, plain = _ctc_setup(corpus)
    batch = speech_batch_of(corpus, setup, ["asr", "ast", "asr"], head.units)
    assert batch.asr_rows.tolist() == [True, False, True] and batch.pad_id == setup.tokenizer.special.endoftext
    with_ctc = StageConfig(**{**plain.__dict__, "ctc_weight": 0.5})
    ce = _loss(setup.model, head, batch, cfg, plain, seed=0)
    total = _loss(setup.model, head, batch, cfg, with_ctc, seed=0)
    encoded = setup.model.audio.encoder(batch.features, batch.feature_lengths)
    ctc = head.loss(encoded, batch.asr_rows, batch.ctc_targets, batch.ctc_target_lengths)
    assert torch.isfinite(ctc) and float(ctc.detach()) > 0
    torch.testing.assert_close(total, ce + 0.5 * ctc)
    total.backward()
    conv = setup.model.audio.encoder.embed.conv[0].weight
    assert conv.grad is not None and float(conv.grad.abs().sum()) > 0
    assert head.proj.weight.grad is not None and float(head.proj.weight.grad.abs().sum()) > 0


def test_ctc_is_skipped_without_asr_rows(corpus: Path) -> None:
    setup, head, cfg, plain = _ctc_setup(corpus)
    batch = speech_batch_of(corpus, setup, ["ast", "ast_cot"], head.units)
    with_ctc = StageConfig(**{**plain.__dict__, "ctc_weight": 0.5})
    with_loss = _loss(setup.model, head, batch, cfg, with_ctc, 0)
    assert float(with_loss.detach()) == float(_loss(setup.model, head, batch, cfg, plain, 0).detach())


def test_encoder_only_ctc_stage_trains_the_encoder_and_leaves_the_decoder(corpus: Path, tmp_path: Path) -> None:
    stage = StageConfig("ctc", "speech", ("encoder",), ce_weight=0.0, ctc_weight=1.0, max_steps=6, lr=1e-2,
                        warmup_steps=1, min_lr_ratio=1.0, batch_seconds=100.0, init_feature_stats=True)  # fmt: skip
    cfg = TrainConfig(stages=(stage,), precision="fp32", log_every=1,
                      specaugment=SpecAugmentConfig(freq_masks=0, time_masks=0))  # fmt: skip
    setup = tiny_setup(corpus)
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    losses = list(losses_of(train(cfg, setup, DataPaths(train=corpus / "train.jsonl"), tmp_path)).values())
    assert losses[-1] < 0.8 * losses[0], losses
    after = setup.model.state_dict()
    changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder"}, changed  # the decoder and projector got no update
    state = load_file(str(sorted((tmp_path / "checkpoints").iterdir())[-1] / "training_state.safetensors"))
    assert "param.ctc_head.proj.weight" in state and "optim.ctc_head.proj.weight.exp_avg" in state


def test_ctc_weight_needs_a_speech_stage() -> None:
    with pytest.raises(ConfigError, match=r"ctc_weight=0.5 needs >= 0 and a speech stage"):
        StageConfig("t", "text", ("decoder",), ctc_weight=0.5)
    with pytest.raises(ConfigError, match=r"ctc_weight=-1.0 needs >= 0"):
        StageConfig("s", "speech", ("encoder",), ctc_weight=-1.0)
    with pytest.raises(ConfigError, match=r"ce_weight=0.0 needs >= 0, and ctc_weight > 0 if 0"):
        StageConfig("s", "speech", ("encoder",), ce_weight=0.0)


def test_dev_evaluation_scores_the_ctc_head_alone_when_asked(corpus: Path) -> None:
    from speechkit.training.batches import read_rows
    from speechkit.training.evaluate import evaluate_dev

    setup, head, _, _ = _ctc_setup(corpus)
    rows = read_rows(corpus / "train.jsonl", True)[:4]
    scores = evaluate_dev(setup.model, setup.tokenizer, rows, (), head)
    assert set(scores) == {"ctc"} and set(scores["ctc"]) == {"en", "de", "fr"}
    assert setup.model.training and head.training  # training mode restored


def test_batches_from_memory_and_device_features_equal_batches_from_files(corpus: Path) -> None:
    from speechkit.audio import LogMelFrontend
    from speechkit.text.prompts import Task
    from speechkit.training.batches import AudioStore, read_rows, speech_batch, with_features

    setup = tiny_setup(corpus)
    rows = read_rows(corpus / "train.jsonl", True)[:5]
    tasks = [Task.ASR, Task.AST, Task.AST_COT, Task.ASR, Task.AST]
    files = speech_batch(rows, tasks, setup.tokenizer, LogMelFrontend("cpu"))
    store = AudioStore(rows, threads=2)
    memory = speech_batch(rows, tasks, setup.tokenizer, None, store)
    assert memory.features is None and memory.waves.shape[0] == 5
    finished = with_features(memory, LogMelFrontend("cpu"))
    assert torch.equal(finished.input_ids, files.input_ids) and torch.equal(finished.labels, files.labels)
    assert torch.equal(finished.feature_lengths, files.feature_lengths) and finished.waves is None
    torch.testing.assert_close(finished.features, files.features, rtol=0, atol=1e-4)  # int16 in memory


def test_char_units_read_the_reading_and_round_trip() -> None:
    from speechkit.training.batches import Row
    from speechkit.training.ctc import reading_chars

    assert reading_chars("Wählen Sie Format - Zellen.") == "wählen sie format zellen"
    assert reading_chars("xuan3 ze2 wen2jian4。") == "xuan3 ze2 wen2jian4"
    kana = Row("j", None, 0.0, "ja", "en", "ファイルを開きます。", None, "ファイルヲ ヒラキマス。")
    units = CtcUnits.characters([kana.reading, "Wählen Sie"])
    assert units.blank == 0 and units.size == len(set("ファイルヲヒラキマスwählensi ")) + 1
    labels = units.encode(kana.text, kana.reading)
    assert units.decode(labels) == "ファイルヲ ヒラキマス" == units.target_text(kana.text, kana.reading)
    assert units.decode(units.encode("x", "Wählen Zoo!")) == "wählen "  # unknown characters are dropped


def test_char_ctc_head_emits_upsampled_frames(corpus: Path) -> None:
    setup = tiny_setup(corpus)
    from speechkit.training.batches import read_rows

    units = CtcUnits.characters(r.reading for r in read_rows(corpus / "train.jsonl", False))
    head = CtcHead(SPEC.encoder_dim, units, upsample=3, seed=0)
    batch = speech_batch_of(corpus, setup, ["asr", "ast", "asr"], units)
    assert batch.ctc_target_lengths.tolist() == [len(units.encode(t, t)) for t in (TEXTS[0][2], TEXTS[2][2])]
    encoded = setup.model.audio.encoder(batch.features, batch.feature_lengths)
    loss = head.loss(encoded, batch.asr_rows, batch.ctc_targets, batch.ctc_target_lengths)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    logits, frames = head.logits(encoded)
    assert logits.shape == (3, 3 * encoded.hidden.shape[1], units.size)
    assert frames.tolist() == (3 * encoded.lengths).tolist()
    assert all(len(path) <= n for path, n in zip(head.greedy(encoded), frames.tolist(), strict=True))


def test_phoneme_ctc_targets_come_from_the_manifests_phonemes(corpus: Path, tmp_path: Path) -> None:
    from speechkit.training.batches import read_rows
    from speechkit.training.trainer import ctc_units

    cfg = dataclasses.replace(stage_config(), ctc_units="phonemes", ctc_upsample=3)
    paths = DataPaths(train=corpus / "train.jsonl")
    units = ctc_units(cfg, None, 0, paths)
    rows = read_rows(corpus / "train.jsonl", False)
    assert units.kind == "phonemes" and "ˈ" in units.chars and "ɔ" in units.chars
    batch = speech_batch_of(corpus, tiny_setup(corpus), ["asr", "ast", "asr"], units)
    assert batch.ctc_targets.tolist() == units.encode("", rows[0].phonemes) + units.encode("", rows[2].phonemes)
    bare = tmp_path / "bare.jsonl"  # a manifest without phonemes (not phonemized) is a clear error
    bare.write_text((corpus / "train.jsonl").read_text().replace('"phonemes"', '"said"'))
    with pytest.raises(ConfigError, match="has no phonemes; add them with recipes/synthetic_demo/phonemize.py"):
        ctc_units(cfg, None, 0, DataPaths(train=bare))


def test_subsampling_init_keeps_the_audio_scale(corpus: Path) -> None:
    # N(0, 0.02) and PyTorch's conv default shrank unit-scale input to std ~0.05 at the first block
    embed = tiny_setup(corpus).model.audio.encoder.embed
    with torch.no_grad():
        out, _ = embed(torch.randn(4, 400, 80, generator=torch.Generator().manual_seed(0)), None)
    assert 0.5 < float(out.std()) < 2.0


def test_reading_exercises_fill_the_audio_slots_with_the_sentence(corpus: Path, tmp_path: Path) -> None:
    from speechkit.training.batches import text_batch

    setup = tiny_setup(corpus)
    tok = setup.tokenizer
    sentences = [tok.encode(t) + [tok.special.endoftext] for t in ("Click OK.", "Open the file menu.")]
    batch = text_batch(sentences, tok, [True, False], stretch=3)
    n = len(sentences[0]) - 1
    assert batch.reading_lengths.tolist() == [3 * n]
    assert batch.reading_ids[0].tolist() == [t for t in sentences[0][:-1] for _ in range(3)]
    assert int((batch.input_ids[0] == tok.special.audio).sum()) == 3 * n
    answer = batch.labels[0][batch.labels[0] != IGNORE].tolist()
    assert answer == sentences[0][:-1] + [tok.special.end]  # loss on the sentence and <|end|> only
    lm = batch.labels[1][batch.labels[1] != IGNORE].tolist()
    assert lm == sentences[1][1:]  # the other row stays language modelling
    # a text stage of reading exercises runs, and its loss falls
    stage = StageConfig("text", "text", ("decoder",), max_steps=6, lr=1e-2, warmup_steps=1, min_lr_ratio=1.0,
                        batch_tokens=4096, reading_fraction=0.5)  # fmt: skip
    cfg = TrainConfig(stages=(stage,), precision="fp32", log_every=1)
    losses = list(losses_of(train(cfg, setup, DataPaths(text=corpus / "train.jsonl"), tmp_path)).values())
    assert losses[-1] < 0.8 * losses[0], losses
    with pytest.raises(ConfigError, match="reading_fraction=0.5 needs 0..1, text data"):
        StageConfig("s", "speech", ("encoder",), reading_fraction=0.5)


def test_rows_without_a_translation_are_transcribed() -> None:
    from speechkit.text.prompts import Task
    from speechkit.training.batches import Row, choose_task

    spliced = Row("train-en-s00001", None, 1.0, "en", None, "Click the menu.", None)
    assert {choose_task({"ast": 1.0, "ast_cot": 1.0}, 0, epoch, spliced) for epoch in range(5)} == {Task.ASR}


def test_audio_store_reads_training_audio_as_stored_and_other_audio_through_load_audio(tmp_path: Path) -> None:
    from speechkit.audio import load_audio
    from speechkit.training.batches import AudioStore, Row

    clip = speechlike(0.5, seed=3)
    cases = {"mono16k.flac": (clip, 16000, "PCM_16"), "stereo.wav": (np.stack([clip, clip], 1), 16000, "PCM_16"),
             "float.wav": (clip, 16000, "FLOAT"), "rate.wav": (clip, 22050, "PCM_16")}  # fmt: skip
    rows = []
    for name, (samples, rate, subtype) in cases.items():
        sf.write(tmp_path / name, samples, rate, subtype=subtype)
        rows.append(Row(name, tmp_path / name, 0.5, "en", None, "x", None))
    store = AudioStore(rows, threads=2)
    for row in rows:
        want = load_audio(row.audio)
        got = store[row.audio]
        assert got.sample_rate == want.sample_rate
        np.testing.assert_array_equal(got.samples, np.round(want.samples * 32768.0).clip(-32768, 32767) / 32768.0)
