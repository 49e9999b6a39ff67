"""LoRA + projector fine-tuning of the tiny official-layout model: training, exact resume, frozen
weights, exports (official layout, PEFT adapter, merged) and manifest errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from speechkit.audio import LogMelFrontend
from speechkit.cli import main as cli_main
from speechkit.errors import CheckpointError, ConfigError, DataError
from speechkit.model.checkpoint import weight_map
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike, write_audio
from speechkit.testing.checkpoint import write_random_checkpoint
from speechkit.training.batches import speech_batch
from speechkit.training.config import StageConfig
from speechkit.training.export import write_official, write_peft_adapter
from speechkit.training.finetune import LossModule, decoder_hidden, finetune, load_for_finetuning
from speechkit.training.finetune_config import FinetuneConfig
from speechkit.training.finetune_data import read_examples, shard_plan
from speechkit.training.optim import build_optimizer, select_trainable

CPU = torch.device("cpu")


def _cfg(**stage) -> FinetuneConfig:
    fields = dict(name="ft", data="speech", trainable=("lora", "projector"), lora=True, max_steps=4, lr=2e-3,
                  warmup_steps=0, batch_seconds=2.6) | stage  # fmt: skip
    return FinetuneConfig(StageConfig(**fields), precision="fp32", log_every=1, gradient_checkpointing=True)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny matmuls: intra-op threads cost more than they save, and 20x more on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    # fp32 storage (and torch_dtype), so exports round-trip the fp32 masters exactly
    root = write_random_checkpoint(tmp_path_factory.mktemp("ft") / "tiny", seed=3, dtype=torch.float32)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps(config | {"torch_dtype": "float32"}))
    return root


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rows = []
    for i, dur in enumerate([1.0, 1.3, 0.9, 1.2, 0.8, 1.1]):
        write_audio(root / f"a{i}.wav", speechlike(dur, seed=i))
        if i % 3 == 2:  # NeMo aliases, no id, no duration
            rows.append({"audio_filepath": f"a{i}.wav", "taskname": "ast", "source_lang": "en", "target_lang": "de",
                         "text": f"the word {i}", "answer": f"das wort {i}"})  # fmt: skip
        else:
            rows.append({"id": f"u{i}", "audio_filepath": f"a{i}.wav", "duration": dur, "task": "asr",
                         "src_lang": "en", "text": f"hello number {i}"})  # fmt: skip
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        audio = model.audio(batch.features, batch.feature_lengths)
        embeds = model.embed_inputs(batch.input_ids, audio)
        positions = torch.arange(embeds.shape[1]).expand(embeds.shape[0], -1)
        return model.decoder.logits(model.decoder(embeds, positions))


def _batch(loaded, manifest, n=3):
    ex = read_examples(manifest)[:n]
    return speech_batch([e.row for e in ex], [e.task for e in ex], loaded.tokenizer, LogMelFrontend("cpu"))


def test_manifest_reads_aliases_and_durations(manifest):
    ex = read_examples(manifest)
    assert [e.task.value for e in ex] == ["asr", "asr", "ast", "asr", "asr", "ast"]
    assert ex[2].row.translation == "das wort 2" and ex[2].row.tgt_lang == "de"
    assert ex[2].row.id.endswith("a2.wav") and ex[2].row.duration == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "x", "audio_filepath": "gone.wav", "text": "hi"}', "audio not found"),
        ('{"id": "x", "audio_filepath": "a0.wav", "task": "ast", "text": "hi"}', "needs 'translation' and 'tgt_lang'"),
        ('{"id": "x", "audio_filepath": "a0.wav", "task": "ast_cot", "text": "hi"}', "fine-tuning reads"),
        ('{"id": "x", "audio_filepath": "a0.wav", "text": " "}', "an asr row needs a non-empty 'text'"),
        ('{"id": "x", "text": "hi"}', "no audio_filepath"),
        ('{"id": "u0", "audio_filepath": "a0.wav", "text": "hi"}', "duplicate id 'u0'"),
    ],
)
def test_bad_manifest_row_names_file_and_line(manifest, line, reason):
    bad = manifest.with_name("bad.jsonl")
    bad.write_text(manifest.read_text().splitlines()[0] + "\n\n" + line + "\n", "utf-8")
    with pytest.raises(DataError, match=rf"^{bad}:3: .*{reason}"):
        read_examples(bad)


def test_shards_partition_the_plan():
    durations = [1.0 + 0.1 * i for i in range(20)]
    shards = [shard_plan(durations, 3.0, 0, 0, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))


def test_checkpointed_decoder_equals_plain_forward(ckpt, manifest):
    loaded = load_for_finetuning(ckpt, _cfg(), CPU)
    model, batch = loaded.model, _batch(loaded, manifest)
    embeds = model.embed_inputs(batch.input_ids, model.audio(batch.features, batch.feature_lengths))
    positions = torch.arange(embeds.shape[1]).expand(embeds.shape[0], -1)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        out = decoder_hidden(model.decoder, embeds, checkpointing)
        torch.testing.assert_close(out, model.decoder(embeds, positions), rtol=0, atol=0)
        out.square().mean().backward(retain_graph=True)
        grads.append(model.decoder.layers[0].self_attn.qkv_proj.lora_b.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_loss_falls_on_a_fixed_batch(ckpt, manifest):
    cfg = _cfg(lr=1e-2)
    loaded = load_for_finetuning(ckpt, cfg, CPU)
    batch, module = _batch(loaded, manifest), LossModule(loaded.model, cfg)
    optimizer = build_optimizer(select_trainable(loaded.model, cfg.stage), cfg.stage, cfg.betas, cfg.eps)
    losses = []
    for _ in range(6):
        loss = module(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < losses[0] - 0.3, losses


def test_resume_after_kill_is_bit_identical_and_exports_reload(ckpt, manifest, tmp_path):
    cfg, examples = _cfg(), read_examples(manifest)
    full, cut = [], []
    whole = load_for_finetuning(ckpt, cfg, CPU)
    finetune(cfg, whole, examples, [], tmp_path / "whole", CPU, on_record=full.append)
    first = load_for_finetuning(ckpt, cfg, CPU)
    finetune(cfg, first, examples, [], tmp_path / "cut", CPU, stop_at_step=2, on_record=cut.append)
    again = load_for_finetuning(ckpt, cfg, CPU)  # a fresh process: the base checkpoint, then the saved state
    progress = finetune(cfg, again, examples, [], tmp_path / "cut", CPU, on_record=cut.append)
    assert progress.step == 4 and [r["step"] for r in cut] == [1, 2, 3, 4]
    assert [r["loss"] for r in cut] == [r["loss"] for r in full]  # exact float equality
    assert full[-1]["loss"] < full[0]["loss"]

    # only the LoRA factors and the speech projector moved
    base = load_speech_model(ckpt, dtype=torch.float32, lora="unmerged").model.state_dict()
    trained = again.model.state_dict()
    for name, value in base.items():
        moved = not torch.equal(value, trained[name])
        assert moved == name.endswith((".lora_a", ".lora_b")) or name.startswith("audio.projector.speech."), name

    names = list(select_trainable(again.model, cfg.stage))
    out = write_official(ckpt, tmp_path / "export", again.model, names)
    batch = _batch(again, manifest)
    reloaded = load_speech_model(out, dtype=torch.float32, lora="unmerged").model
    torch.testing.assert_close(_logits(reloaded, batch), _logits(again.model, batch), rtol=0, atol=0)
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.self_attn.qkv_proj.lora_A.speech.weight" in index
    assert "model.layers.1.self_attn.qkv_proj.lora_A.vision.weight" in index  # the rest copied unchanged

    adapter = write_peft_adapter(again.model, out / "speech-lora", "float32", str(ckpt))
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16.0, "LORA")

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
    assert torch.equal(tensors[key], trained["decoder.layers.1.mlp.down_proj.lora_b"])
    assert len(tensors) == 2 * 4 * 2  # A and B, 4 targets, 2 layers

    merged_dir = tmp_path / "merged"
    assert cli_main(["merge-lora", str(out), str(merged_dir)]) == 0
    merged = load_speech_model(merged_dir, dtype=torch.float32)
    assert merged.config.lora_merged and merged.model.decoder.lora_state == "none"
    expected = copy.deepcopy(again.model)
    expected.decoder.merge_lora_()
    torch.testing.assert_close(_logits(merged.model, batch), _logits(expected, batch), rtol=0, atol=0)
    keys = json.loads((merged_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.0.self_attn.qkv_proj.weight" in keys and not [k for k in keys if "lora" in k]
    with pytest.raises(ConfigError, match="a merged export .* cannot load with lora='unmerged'"):
        load_speech_model(merged_dir, lora="unmerged")
    with pytest.raises(ConfigError, match="a merged export"):
        load_for_finetuning(merged_dir, cfg, CPU)


# What vLLM's LoRA loader reads (vllm-project/vllm, read on GitHub, not run: vLLM cannot be installed here):
# - vllm/lora/peft_helper.py (commit 02143692): adapter_config.json must hold r, lora_alpha, target_modules;
#   bias "none", modules_to_save empty, no DoRA; scale = lora_alpha / r unless use_rslora.
# - vllm/lora/lora_model.py from_local_checkpoint (commit 0306474e) and vllm/lora/utils.py
#   parse_fine_tuned_lora_name (commit 001e63a8): adapter_model.safetensors, "base_model.model." stripped, then
#   "<module>.lora_A.weight" / ".lora_B.weight"; a module's last name must be one of the model's LoRA modules.
# - vllm/model_executor/models/phi4mm.py (commits 01ab0ee8 and 42fa4c09): the decoder is a LlamaModel at "model.",
#   packed_modules_mapping keeps qkv_proj and gate_up_proj as one fused slice each, so the fused LoRA loads as is.
# - vllm/lora/layers/base_linear.py set_lora: A is (rank, in_features), B is (out_features, rank), PEFT's layout.
VLLM_MODULES = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
VLLM_KEY = re.compile(r"base_model\.model\.(model\.layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.lora_([AB])\.weight")


def test_peft_adapter_has_the_layout_vllm_reads(ckpt, tmp_path):
    loaded = load_speech_model(ckpt, dtype=torch.float32, lora="unmerged")
    lora = loaded.config.speech_lora
    adapter = write_peft_adapter(loaded.model, tmp_path / "speech-lora", "bfloat16", str(ckpt))
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16, "LORA")
    assert isinstance(config["lora_alpha"], int) and config["lora_alpha"] / config["r"] == lora.scale
    assert config["bias"] == "none" and not config["modules_to_save"]
    assert not config.get("use_dora") and not config.get("use_rslora")
    assert set(config["target_modules"]) == VLLM_MODULES

    official = {}  # the official layout's speech LoRA and base shapes, the reference for the adapter
    for shard in set(weight_map(ckpt).values()):
        with safe_open(str(shard), "pt") as f:
            official |= {k: f.get_tensor(k) for k in f.keys() if ".base_layer." in k or ".speech.weight" in k}
    expected = {(k.removesuffix(".base_layer.weight"), ab) for k in official if ".base_layer." in k for ab in "AB"}
    seen = set()
    for key, value in load_file(str(adapter / "adapter_model.safetensors")).items():
        match = VLLM_KEY.fullmatch(key)
        assert match and match[2] in VLLM_MODULES, key
        module, ab = match[1], match[3]
        out_features, in_features = official[f"{module}.base_layer.weight"].shape
        assert value.shape == ((lora.rank, in_features) if ab == "A" else (out_features, lora.rank)), key
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, official[f"{module}.lora_{ab}.speech.weight"].to(torch.bfloat16)), key
        seen.add((module, ab))
    assert seen == expected and len(seen) == 2 * 4 * 2  # A and B, 4 fused targets, 2 layers


def test_unknown_merged_format_version_is_refused(ckpt, tmp_path):
    config = json.loads((ckpt / "config.json").read_text())
    config["speechkit_format"] = {"name": "speechkit-merged-speech-lora", "version": 99}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from speechkit.model.config import SpeechModelConfig

    with pytest.raises(CheckpointError, match="speechkit_format=.*version': 99.*upgrade speechkit"):
        SpeechModelConfig.from_file(tmp_path / "config.json")


def test_bf16_keeps_frozen_weights_bf16_and_trained_ones_fp32(ckpt, manifest):
    cfg = dataclasses.replace(_cfg(), precision="bf16")
    loaded = load_for_finetuning(ckpt, cfg, CPU)
    trained = select_trainable(loaded.model, cfg.stage)
    for name, param in loaded.model.named_parameters():
        assert param.dtype == (torch.float32 if name in trained else torch.bfloat16), name
    loss = LossModule(loaded.model, cfg)(_batch(loaded, manifest, n=2))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())
    assert all(p.grad is None for n, p in loaded.model.named_parameters() if n not in trained)


def test_early_stopping_keeps_the_best_evaluation(ckpt, manifest, tmp_path):
    cfg = dataclasses.replace(_cfg(eval_every=1, max_steps=6), patience=1, dev_rows=1)
    examples = read_examples(manifest)
    history = []
    loaded = load_for_finetuning(ckpt, cfg, CPU)
    # a random model's transcripts are all wrong: WER never improves after the first evaluation
    progress = finetune(cfg, loaded, examples, examples[:1], tmp_path, CPU, on_record=history.append)
    assert (progress.step, progress.stopped_early, progress.best_step) == (2, True, 1)
    assert [h["step"] for h in history if "dev_wer" in h] == [1, 2]
    assert json.loads((tmp_path / "best" / "state.json").read_text())["step"] == 1
    assert (tmp_path / "checkpoints" / "step-0000002").is_dir()


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"trainable": ("lora", "encoder")}, "fine-tuning trains \\('projector', 'lora'\\)"),
        ({"max_seconds": 60.0}, "max_seconds=60.0, init_feature_stats=False; fine-tuning runs by steps"),
    ],
)
def test_config_errors(stage, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**stage)


def test_data_and_state_errors(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_examples(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows"):
        read_examples(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="1 batch\\(es\\) per epoch cannot feed 2 ranks"):
        shard_plan([1.0], 10.0, 0, 0, 0, 2)
    from safetensors.torch import save_file

    from speechkit.training.finetune import load_trainable

    save_file({"param.a": torch.zeros(2)}, str(tmp_path / "t.safetensors"))
    with pytest.raises(CheckpointError, match="do not match this config \\(missing \\['b'\\], unexpected \\['a'\\]\\)"):
        load_trainable(tmp_path / "t.safetensors", {"b": torch.nn.Parameter(torch.zeros(2))})
