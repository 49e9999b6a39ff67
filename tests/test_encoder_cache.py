"""Stages on cached encoder outputs (tiny model, CPU): the cache, how batches read it, its masks; and, on a
GPU, the CUDA-graph steps against the eager ones."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import losses_of, speech_batch_of, stage_config, tiny_setup

from speechkit.errors import ConfigError
from speechkit.training.config import StageConfig, TrainConfig
from speechkit.training.trainer import DataPaths, _loss, train


def test_cached_encoder_stage_trains_on_the_encoders_outputs(corpus: Path, tmp_path: Path) -> None:
    from speechkit.errors import DataError
    from speechkit.model.encoder import EncoderOutput
    from speechkit.text.prompts import Task
    from speechkit.training.batches import cached_batch, read_rows
    from speechkit.training.encoder_cache import EncoderCache, cached_embeds

    setup = tiny_setup(corpus)
    rows = read_rows(corpus / "train.jsonl", True)
    cache = EncoderCache(setup.model, rows, None, torch.device("cpu"), precision="fp32")
    reference = speech_batch_of(corpus, setup, ["asr", "ast", "ast_cot"])
    setup.model.eval()
    with torch.no_grad():
        encoded = setup.model.audio.encoder(reference.features, reference.feature_lengths)
    got, lengths = _cached_outputs(cache, [r.id for r in rows[:3]], setup.tokenizer.special.audio)
    assert lengths == encoded.lengths.tolist()
    for i, n in enumerate(lengths):  # valid tokens; positions that are not audio read the zero row
        torch.testing.assert_close(got[i, :n].float(), encoded.hidden[i, :n])
        assert not got[i, n:].any()
    tasks = [Task.ASR, Task.AST, Task.AST_COT]
    audio = setup.tokenizer.special.audio
    batch = cached_batch(rows[:3], tasks, setup.tokenizer, [cache.length(r.id) for r in rows[:3]],
                         lambda ids, input_ids: cache.sources(ids, input_ids, audio))  # fmt: skip
    assert torch.equal(batch.input_ids, reference.input_ids) and torch.equal(batch.labels, reference.labels)
    # the cached path's decoder input is embed_inputs of the projected encoder outputs
    model = setup.model
    with torch.no_grad():
        projected = EncoderOutput(model.audio.projector(encoded.hidden), encoded.lengths)
        want = model.embed_inputs(batch.input_ids, projected)
        torch.testing.assert_close(cached_embeds(model, batch.input_ids, cache.rows(batch.audio_source)), want)
    with pytest.raises(DataError, match=f"{rows[0].id}: the prompt has 1 audio tokens, the cache"):
        cache.sources([rows[0].id], torch.tensor([[audio, 7]]), audio)
    # a stage on cached outputs trains the decoder, leaves the encoder, and resumes exactly
    stage = StageConfig("asr", "speech", ("projector", "decoder"), cache_encoder=True, max_steps=4, lr=3e-3,
                        warmup_steps=1, batch_seconds=2.5, tasks={"asr": 1.0, "ast": 1.0},
                        audio_time_masks=2, audio_time_width=2)  # masks drawn from the saved RNG state  # fmt: skip
    cfg = dataclasses.replace(stage_config(), stages=(stage_config().stages[1], stage))
    paths = DataPaths(train=corpus / "train.jsonl")
    before = tiny_setup(corpus)
    full = losses_of(train(cfg, before, paths, tmp_path / "full"))
    train(cfg, tiny_setup(corpus), paths, tmp_path / "cut", stop_at_step=6)
    resumed = losses_of(train(cfg, tiny_setup(corpus), paths, tmp_path / "cut"))
    for step in (7, 8):
        assert resumed[step] == full[step], (step, resumed[step], full[step])


def test_audio_time_masks_cover_spans_of_audio_positions_only() -> None:
    from speechkit.training.encoder_cache import audio_time_keep

    torch.manual_seed(0)
    lengths = [12, 40, 3, 25] * 50
    audio = torch.zeros(len(lengths), 60, dtype=torch.bool)
    for row, n in enumerate(lengths):
        audio[row, 5 : 5 + n] = True  # prompt tokens before, answer and padding after
    keep = audio_time_keep(audio, masks=2, width=4)
    assert keep[~audio].all()  # only audio positions are ever masked
    dropped = (~keep).sum(dim=1)
    assert int(dropped.max()) <= 2 * 4 and int(dropped.sum()) > 0
    for row in range(len(lengths)):  # at most two runs of masked positions per clip
        runs = torch.diff(torch.cat([torch.tensor([0]), (~keep[row]).int(), torch.tensor([0])])).eq(1).sum()
        assert int(runs) <= 2
    # spans are placed over the whole clip: masked positions reach its last quarter
    late = [int((~keep[row, 5 + 3 * n // 4 : 5 + n]).any()) for row, n in enumerate(lengths) if n == 40]
    assert sum(late) > 0
    with pytest.raises(ConfigError, match="audio_time_masks=2 .* are for cache_encoder stages"):
        StageConfig("s", "speech", ("decoder",), audio_time_masks=2)


def _cached_outputs(cache, row_ids: list[str], audio: int) -> tuple[torch.Tensor, list[int]]:
    """The cached outputs of ``row_ids`` (B, longest, dim), read through prompts of audio tokens only."""
    lengths = [cache.length(i) for i in row_ids]
    input_ids = torch.tensor([[audio] * n + [-1] * (max(lengths) - n) for n in lengths])
    return cache.rows(cache.sources(row_ids, input_ids, audio)), lengths


def test_cache_encoder_needs_a_frozen_encoder_and_no_ctc() -> None:
    with pytest.raises(ConfigError, match="cache_encoder needs"):
        StageConfig("asr", "speech", ("encoder", "decoder"), cache_encoder=True)
    with pytest.raises(ConfigError, match="cache_encoder needs"):
        StageConfig("asr", "speech", ("decoder",), cache_encoder=True, ctc_weight=0.3)


def test_edge_silence_is_fixed_per_clip_and_shared_by_batches_and_the_encoder_cache(corpus: Path) -> None:
    from speechkit.audio import LogMelFrontend
    from speechkit.text.prompts import Task
    from speechkit.training.batches import EdgeSilence, read_rows, speech_batch
    from speechkit.training.encoder_cache import EncoderCache

    setup = tiny_setup(corpus)
    rows = read_rows(corpus / "train.jsonl", True)[:3]
    silence = EdgeSilence(0.5, seed=3)
    plain = speech_batch(rows, [Task.ASR] * 3, setup.tokenizer, None)
    padded = speech_batch(rows, [Task.ASR] * 3, setup.tokenizer, None, edge_silence=silence)
    again = speech_batch(rows, [Task.ASR] * 3, setup.tokenizer, None, edge_silence=EdgeSilence(0.5, seed=3))
    assert torch.equal(padded.waves, again.waves) and torch.equal(padded.wave_lengths, again.wave_lengths)
    added = (padded.wave_lengths - plain.wave_lengths).tolist()
    assert all(0 <= n <= 16000 for n in added) and len(set(added)) > 1  # up to 0.5 s on each side, per clip
    for i, (n, m) in enumerate(zip(plain.wave_lengths.tolist(), padded.wave_lengths.tolist(), strict=True)):
        wave = padded.waves[i, :m]
        start = int(torch.nonzero(wave).min())  # the clip sits between zeros, unchanged
        torch.testing.assert_close(wave[start : start + n].abs().sum(), plain.waves[i, :n].abs().sum())
    # the cache encodes the same padded audio that a speech batch of the stage would carry
    cache = EncoderCache(setup.model, rows, None, torch.device("cpu"), precision="fp32", edge_silence=silence)
    features = speech_batch(rows, [Task.ASR] * 3, setup.tokenizer, LogMelFrontend("cpu"), edge_silence=silence)
    setup.model.eval()
    with torch.no_grad():
        encoded = setup.model.audio.encoder(features.features, features.feature_lengths)
    got, lengths = _cached_outputs(cache, [r.id for r in rows], setup.tokenizer.special.audio)
    assert lengths == encoded.lengths.tolist()
    for i, n in enumerate(lengths):
        torch.testing.assert_close(got[i, :n].float(), encoded.hidden[i, :n])
    with pytest.raises(ConfigError, match="edge_silence_s"):
        dataclasses.replace(stage_config(), edge_silence_s=-1.0)
    # the passes' waveforms built by loading processes: the same cache, bit for bit
    rows = read_rows(corpus / "train.jsonl", True)
    alone = EncoderCache(setup.model, rows, None, torch.device("cpu"), precision="fp32", edge_silence=silence)
    loaded = EncoderCache(setup.model, rows, None, torch.device("cpu"), precision="fp32", edge_silence=silence,
                          workers=2)  # fmt: skip
    assert torch.equal(loaded.flat, alone.flat) and loaded._where == alone._where


def test_a_cached_batch_padded_to_its_bucket_has_the_same_loss_and_gradients(corpus: Path) -> None:
    """What GraphedSteps relies on, checked eagerly on the CPU (fp32)."""
    from speechkit.training.batches import Batch, read_rows
    from speechkit.training.encoder_cache import EncoderCache
    from speechkit.training.graphs import cached_bucket, fill_bucket
    from speechkit.training.trainer import _StageData

    setup = tiny_setup(corpus)
    model = setup.model.train()
    cache = EncoderCache(model, read_rows(corpus / "train.jsonl", True), None, torch.device("cpu"), precision="fp32")
    stage = StageConfig("asr", "speech", ("projector", "decoder"), cache_encoder=True,
                        tasks={"asr": 1.0, "ast": 1.0, "ast_cot": 1.0}, batch_seconds=100.0)  # fmt: skip
    cfg = TrainConfig(stages=(stage,), precision="fp32")
    batch = next(iter(_StageData(stage, setup, DataPaths(train=corpus / "train.jsonl"), 0, None, False, None,
                                 cache).loader(0, 0, 0)))  # fmt: skip
    rows, tokens = batch.input_ids.shape
    key = cached_bucket(rows, tokens)
    static = Batch(torch.empty(key, dtype=torch.int64), torch.empty(key, dtype=torch.int64), None, None,
                   pad_id=batch.pad_id, audio_source=torch.empty(key, dtype=torch.int64))  # fmt: skip
    fill_bucket(static, batch, cache.pad_index)
    assert key[0] > rows and key[1] > tokens  # both padded
    results = []
    for b in (batch, static):
        model.zero_grad(set_to_none=True)
        loss = _loss(model, None, b, cfg, stage, 0, cache)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (padded_loss, padded_grads) = results
    torch.testing.assert_close(padded_loss, loss)
    assert grads.keys() == padded_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(padded_grads[name], grad, msg=name)


def test_bucket_padding_leaves_the_encoders_outputs_unchanged(corpus: Path) -> None:
    """What GraphedEncoder relies on, checked eagerly on the CPU: the batch padded to its bucket (zero frames,
    full-length zero rows) gives the real rows the encoder outputs of the batch alone."""
    from speechkit.model.encoder import pad_to_bucket
    from speechkit.training.graphs import ENCODER_FRAMES_STEP, ENCODER_ROWS_STEP, unpadded

    setup = tiny_setup(corpus)
    encoder = setup.model.audio.encoder.eval()
    batch = speech_batch_of(corpus, setup, ["asr", "asr", "asr"])
    with torch.no_grad():
        want = encoder(batch.features, batch.feature_lengths)
        padded, padded_lengths = pad_to_bucket(batch.features, batch.feature_lengths, ENCODER_ROWS_STEP,
                                                ENCODER_FRAMES_STEP)
        hidden = encoder(padded, padded_lengths, lengths_on_host=False).hidden
    assert padded.shape[0] == ENCODER_ROWS_STEP and padded.shape[1] == ENCODER_FRAMES_STEP
    got = unpadded(encoder, hidden, batch.features.shape, batch.feature_lengths)
    assert got.lengths.tolist() == want.lengths.tolist() and got.hidden.shape == want.hidden.shape
    for i, n in enumerate(want.lengths.tolist()):
        torch.testing.assert_close(got.hidden[i, :n], want.hidden[i, :n])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_steps_follow_the_eager_steps(corpus: Path) -> None:
    """fp32 on the GPU: steps replayed from CUDA graphs (padded buckets, capturable AdamW) give the eager
    steps' losses and weights; a bucket is captured once and replayed for later batches of its shape."""
    from speechkit.training.batches import read_rows
    from speechkit.training.encoder_cache import EncoderCache
    from speechkit.training.graphs import GraphedSteps
    from speechkit.training.optim import build_optimizer, select_trainable
    from speechkit.training.trainer import _StageData, _step

    device = torch.device("cuda")
    stage = StageConfig("asr", "speech", ("projector", "decoder", "lora"), lora=True, cache_encoder=True,
                        tasks={"asr": 1.0, "ast": 1.0, "ast_cot": 1.0}, lr=3e-3, batch_seconds=2.5)  # fmt: skip
    cfg = TrainConfig(stages=(stage,), precision="fp32")
    runs = []
    for graphed in (False, True):
        setup = dataclasses.replace(tiny_setup(corpus), device=device)
        model = setup.model.to(device).train()
        cache = EncoderCache(model, read_rows(corpus / "train.jsonl", True), None, device, precision="fp32")
        params = select_trainable(model, stage)
        optimizer = build_optimizer(params, stage, cfg.betas, cfg.eps, capturable=graphed)
        data = _StageData(stage, setup, DataPaths(train=corpus / "train.jsonl"), 0, None, False, None, cache)
        loss_fn = functools.partial(lambda b, m, c: _loss(m, None, b, cfg, stage, 0, c), m=model, c=cache)
        stepper = GraphedSteps(loss_fn, list(params.values()), optimizer, cfg.grad_clip,
                               cache.pad_index) if graphed else None  # fmt: skip
        losses = []
        for epoch in range(3):
            for batch in data.loader(epoch, 0, 0):
                if graphed:
                    loss, norm = stepper(batch, 1e-3)
                else:
                    loss, norm = _step(model, None, data.finish(batch, device), optimizer, params, cfg, stage, 1e-3,
                                       0, cache)  # fmt: skip
                losses.append((float(loss), float(norm)))
        runs.append((losses, {k: p.detach().cpu() for k, p in params.items()}, stepper))
    (eager, eager_weights, _), (graph, graph_weights, stepper) = runs
    assert len(stepper.buckets) < len(graph), "every batch captured a new graph"
    np.testing.assert_allclose(np.array(graph), np.array(eager), rtol=1e-4, atol=1e-6)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(graph_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("precision", "workers", "rtol"), [("fp32", 0, 1e-4), ("bf16", 2, 3e-2)])
def test_graphed_encoder_stage_follows_the_eager_stage(corpus: Path, tmp_path: Path, precision: str, workers: int,
                                                       rtol: float) -> None:  # fmt: skip
    """A CTC stage whose encoder runs from CUDA graphs gives the eager stage's losses; with loader workers,
    whose pin-memory thread allocates while a bucket is captured (the recipe's setting), too."""
    stage = StageConfig("ctc", "speech", ("encoder",), ce_weight=0.0, ctc_weight=1.0, max_steps=8, lr=3e-3,
                        warmup_steps=1, batch_seconds=2.5, init_feature_stats=True)  # fmt: skip
    losses = []
    for graphs in (False, True):
        cfg = TrainConfig(stages=(stage,), precision=precision, log_every=1, cuda_graphs_encoder=graphs,
                          ctc_units="chars", ctc_upsample=3, audio_in_memory=True, features_on_device=True,
                          num_workers=workers)  # fmt: skip
        setup = dataclasses.replace(tiny_setup(corpus), device=torch.device("cuda"))
        history = train(cfg, setup, DataPaths(train=corpus / "train.jsonl"), tmp_path / f"{graphs}")
        losses.append(list(losses_of(history).values()))
    eager, graphed = losses
    assert len(eager) == len(graphed) == 8
    np.testing.assert_allclose(graphed, eager, rtol=rtol)
