"""The training loop: stages in order, bf16 autocast over fp32 master weights, clipping, periodic dev
evaluation, self-describing checkpoints and exact resume.

Typical use (the recipe's ``train.py`` does this)::

    setup = TrainSetup(model, official_config, tokenizer, tokenizer_dir, torch.device("cuda"))
    history = train(cfg.train, setup, DataPaths(text=..., train=..., dev=...), run_dir, resume=True)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from speechkit.audio import LogMelFrontend
from speechkit.errors import ConfigError
from speechkit.model.encoder import EncoderOutput
from speechkit.model.speech_model import SpeechModel
from speechkit.text.prompts import Task
from speechkit.text.tokenizer import Tokenizer
from speechkit.training import checkpoint as ckpt
from speechkit.training.batches import (
    IGNORE,
    AudioStore,
    Batch,
    BatchSource,
    EdgeSilence,
    Row,
    cached_batch,
    choose_task,
    plan_batches,
    read_rows,
    speech_batch,
    text_batch,
    unit_interval,
    with_features,
    worker_init,
)  # fmt: skip
from speechkit.training.config import StageConfig, TrainConfig, to_dict
from speechkit.training.ctc import STATE_PREFIX, CtcHead, CtcUnits
from speechkit.training.encoder_cache import EncoderCache, audio_time_keep, cached_embeds
from speechkit.training.evaluate import dev_subset, evaluate_dev
from speechkit.training.graphs import GraphedEncoder, GraphedSteps
from speechkit.training.model_init import set_feature_stats_
from speechkit.training.optim import build_optimizer, lr_at, select_trainable, spec_augment

log = logging.getLogger(__name__)
FEATURE_STATS_ROWS = 64  # utterances whose frames set the encoder's mel statistics


@dataclass(frozen=True)
class TrainSetup:
    """The model to train and what describes it: its official config dict and tokenizer (with the
    folder holding ``tokenizer.json``/``generation_config.json``, copied into every checkpoint)."""

    model: SpeechModel
    official: dict[str, Any]
    tokenizer: Tokenizer
    tokenizer_dir: Path
    device: torch.device


@dataclass(frozen=True)
class DataPaths:
    """Manifests: ``text`` (transcripts and translations, for text stages), ``train`` and ``dev``
    (synthesized, with audio, for speech stages). A path a stage does not use may be None."""

    text: Path | None = None
    train: Path | None = None
    dev: Path | None = None


class _StageData:
    """A stage's examples, their batching costs, and how to build batch i of an epoch and finish it on
    the training device."""

    def __init__(self, stage: StageConfig, setup: TrainSetup, paths: DataPaths, seed: int,
                 store: AudioStore | None, features_on_device: bool, ctc: CtcUnits | None,
                 cache: EncoderCache | None = None, edge_silence: EdgeSilence | None = None) -> None:  # fmt: skip
        self.stage, self.seed, self.tokenizer, self.store, self.cache = stage, seed, setup.tokenizer, store, cache
        self.ctc = ctc if stage.ctc_weight else None
        self.edge_silence = edge_silence
        self.device_frontend = LogMelFrontend(setup.device) if features_on_device else None
        if stage.data == "text":
            if paths.text is None:
                raise ConfigError(f"stage {stage.name}: a text stage needs the text manifest")
            texts = sorted({t for r in read_rows(paths.text, False) for t in (r.text, r.translation) if t})
            eos = setup.tokenizer.special.endoftext
            self.tokens = [setup.tokenizer.encode(t) + [eos] for t in texts]
            self.costs = [float(len(t)) for t in self.tokens]
            self.budget = float(stage.batch_tokens)
        else:
            if paths.train is None:
                raise ConfigError(f"stage {stage.name}: a speech stage needs the synthesized train manifest")
            self.rows = read_rows(paths.train, True)
            self.costs = [r.duration for r in self.rows]
            self.budget = stage.batch_seconds
            self.frontend = None if features_on_device else LogMelFrontend("cpu")

    def build(self, epoch: int, indices: list[int]) -> Batch:
        if self.stage.data == "text":
            fraction = self.stage.reading_fraction
            reading = [unit_interval(self.seed, epoch, "reading", i) < fraction for i in indices] if fraction else None
            return text_batch([self.tokens[i] for i in indices], self.tokenizer, reading, self.stage.reading_stretch)
        rows = [self.rows[i] for i in indices]
        tasks = [choose_task(self.stage.tasks, self.seed, epoch, r) for r in rows]
        if self.cache is not None:
            audio = self.tokenizer.special.audio
            return cached_batch(rows, tasks, self.tokenizer, [self.cache.length(r.id) for r in rows],
                                lambda ids, input_ids: self.cache.sources(ids, input_ids, audio))  # fmt: skip
        return speech_batch(rows, tasks, self.tokenizer, self.frontend, self.store, self.ctc, self.edge_silence)

    def finish(self, batch: Batch, device: torch.device) -> Batch:
        """``batch`` on ``device``, with features computed there if it carries waveforms."""
        batch = batch.to(device)
        return batch if self.device_frontend is None else with_features(batch, self.device_frontend)

    def loader(self, epoch: int, start: int, workers: int):
        plan = plan_batches(self.costs, self.budget, self.seed, epoch)
        source = BatchSource(plan[start:], lambda idx: self.build(epoch, idx))
        # a private generator: an iterator draws its workers' base seed from it, and from the global one
        # otherwise, which would shift the random draws of the steps after a resume (audio_time_masks)
        return torch.utils.data.DataLoader(
            source, batch_size=None, shuffle=False, num_workers=workers, worker_init_fn=worker_init,
            pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(self.seed),
        )  # fmt: skip


def _loss(model: SpeechModel, head: CtcHead | None, batch: Batch, cfg: TrainConfig, stage: StageConfig,
          seed: int, cache: EncoderCache | None = None,
          encoder: GraphedEncoder | None = None) -> torch.Tensor:  # fmt: skip
    """``ce_weight`` x the decoder's answer-token cross-entropy + ``ctc_weight`` x the CTC of ASR rows.

    A batch of a cached stage (``audio_source``) reads its encoder outputs from ``cache``; that path has no
    host synchronisation and fixed shapes per batch shape, so a CUDA graph can capture it (graphs.py).
    ``encoder``, when given, encodes the features instead of the model's encoder (its graphed form).
    """
    device = batch.input_ids.device
    loss = torch.zeros((), device=device)
    # autocast's cache of cast weights would hold tensors of a graph's private pool past its capture
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False):
        encoded = None
        if batch.features is not None:
            feats = spec_augment(batch.features, batch.feature_lengths.cpu(), cfg.specaugment, seed)
            encoded = (encoder or model.audio.encoder)(feats, batch.feature_lengths)
        if batch.audio_source is not None:
            encoded = cache.rows(batch.audio_source)
            if stage.audio_time_masks:
                encoded = encoded * audio_time_keep(batch.input_ids == model.audio_token_id, stage.audio_time_masks,
                                                    stage.audio_time_width).unsqueeze(-1)  # fmt: skip
            embeds = cached_embeds(model, batch.input_ids, encoded)
        elif stage.ce_weight:
            audio = None if encoded is None else EncoderOutput(model.audio.projector(encoded.hidden), encoded.lengths)
            if batch.reading_ids is not None:
                audio = _reading_slots(model, batch, seed)
            embeds = model.embed_inputs(batch.input_ids, audio)
        if stage.ce_weight:
            positions = torch.arange(embeds.shape[1], device=device).expand(embeds.shape[0], -1)
            logits = model.decoder.logits(model.decoder(embeds, positions))
    if stage.ce_weight:
        ce = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)
        loss = loss + stage.ce_weight * ce
    if stage.ctc_weight and encoded is not None and batch.asr_rows is not None and bool(batch.asr_rows.any()):
        ctc = head.loss(encoded, batch.asr_rows, batch.ctc_targets, batch.ctc_target_lengths)
        loss = loss + stage.ctc_weight * ctc
    return loss


READING_NOISE = 0.5  # std of the noise on reading-exercise slots, relative to the embeddings' std


def _reading_slots(model: SpeechModel, batch: Batch, seed: int) -> EncoderOutput:
    """The audio slots of reading exercises: their token embeddings (no gradient through this path), plus
    Gaussian noise drawn from ``seed`` so that copying one slot is not enough."""
    clean = model.decoder.embed(batch.reading_ids).detach()
    gen = torch.Generator(clean.device).manual_seed(seed)
    noise = torch.randn(clean.shape, generator=gen, device=clean.device, dtype=clean.dtype)
    return EncoderOutput(clean + READING_NOISE * clean.std() * noise, batch.reading_lengths)


def _step(model, head, batch, optimizer, params, cfg: TrainConfig, stage: StageConfig, lr: float, seed: int,
          cache: EncoderCache | None,
          encoder: GraphedEncoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimizer step (eager, or with a graphed ``encoder``); returns the loss and the gradient norm
    before clipping (0-dim tensors)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = _loss(model, head, batch, cfg, stage, seed, cache, encoder)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
    optimizer.step()
    return loss.detach(), norm


def train(
    cfg: TrainConfig,
    setup: TrainSetup,
    paths: DataPaths,
    run_dir: Path,
    *,
    resume: bool = True,
    stop_at_step: int | None = None,
    on_record: Callable[[dict], None] | None = None,
    before_stage: Callable[[StageConfig], None] | None = None,
) -> list[dict]:
    """Run (or resume) every stage of ``cfg``; returns the history (one dict per logged step or eval).

    ``resume`` continues from the newest checkpoint in ``run_dir/checkpoints``; ``stop_at_step`` saves a
    checkpoint after that global step and returns, as a kill right after a save would leave the run.
    ``on_record`` sees each history entry as it is made; ``before_stage`` runs before each stage
    starts or resumes (the recipe waits there for synthesis that runs beside the text stage).
    """
    model = setup.model.to(setup.device).train()
    head = None
    if any(stage.ctc_weight for stage in cfg.stages):
        units = ctc_units(cfg, setup.tokenizer, model.config.decoder.vocab_size, paths)
        head = CtcHead(model.config.encoder.attention_dim, units, cfg.ctc_upsample, cfg.seed)
        head = head.to(setup.device).train()
    extra = {STATE_PREFIX: head} if head is not None else {}
    position, history, saved = ckpt.Position(), [], None
    found = ckpt.latest_checkpoint(run_dir) if resume else None
    if found is not None:
        meta = ckpt.read_training_meta(found)
        position = ckpt.Position(**meta["position"])
        history = meta["history"]
        saved = ckpt.load_model_state(found, model, extra)
        log.info("resuming from %s (stage %d, step %d)", found, position.stage, position.step)
    dev: list[Row] = []
    store, cache = None, None
    for index in range(position.stage, len(cfg.stages)):
        if index != position.stage:
            position = ckpt.Position(stage=index, global_step=position.global_step)
            saved = None
        if before_stage is not None:
            before_stage(cfg.stages[index])
        if not dev and paths.dev is not None and cfg.stages[index].data == "speech":
            dev = dev_subset(read_rows(paths.dev, True), cfg.dev_per_lang)  # read late: synthesis may run now
        if store is None and cfg.audio_in_memory and cfg.stages[index].data == "speech":
            start = time.perf_counter()
            store = AudioStore(read_rows(paths.train, True), threads=max(4, cfg.num_workers))
            log.info("training audio decoded into memory in %.1f s", time.perf_counter() - start)
        if "encoder" in cfg.stages[index].trainable:
            cache = None
        elif cache is None and cfg.stages[index].cache_encoder:
            start = time.perf_counter()
            cache = EncoderCache(model, read_rows(paths.train, True), store, setup.device, cfg.precision,
                                 edge_silence(cfg), workers=cfg.num_workers)
            log.info("encoder outputs cached in %.1f s", time.perf_counter() - start)
        position = _run_stage(cfg, setup, extra, store, paths, run_dir, position, saved, history, dev, stop_at_step,
                              on_record, cache if cfg.stages[index].cache_encoder else None)  # fmt: skip
        if stop_at_step is not None and position.global_step >= stop_at_step:
            break
    return history


def edge_silence(cfg: TrainConfig) -> EdgeSilence | None:
    """The run's silence around training clips (one draw per clip for the whole run), or None."""
    return EdgeSilence(cfg.edge_silence_s, cfg.seed) if cfg.edge_silence_s > 0 else None


def ctc_units(cfg: TrainConfig, tokenizer: Tokenizer, vocab_size: int, paths: DataPaths) -> CtcUnits:
    """The CTC head's labels. Characters come from the readings of the text manifest (the train split,
    there before synthesis ends), else of the train manifest: the same data gives the same label set,
    so a resumed run's head has its saved shape."""
    if cfg.ctc_units == "tokens":
        return CtcUnits.tokens(tokenizer, vocab_size)
    source = paths.text or paths.train
    if source is None:
        raise ConfigError(f"train.ctc_units={cfg.ctc_units} needs the text or train manifest for its characters")
    rows = read_rows(source, False)
    if cfg.ctc_units == "phonemes":
        if not any(r.phonemes for r in rows):
            raise ConfigError(f"train.ctc_units=phonemes: {source} has no phonemes; add them with "
                              "recipes/synthetic_demo/phonemize.py, or use ctc_units=chars")  # fmt: skip
        return CtcUnits.characters((r.phonemes for r in rows), "phonemes")
    return CtcUnits.characters(r.reading for r in rows)


def _run_stage(cfg, setup, extra, store, paths, run_dir, position, saved, history, dev, stop_at_step, on_record,
               cache=None):
    stage = cfg.stages[position.stage]
    model = setup.model
    head = extra.get(STATE_PREFIX)
    params = select_trainable(model, stage)
    if stage.ctc_weight:
        params |= head.trainable()
    names = list(params)
    graphed = cfg.cuda_graphs and cache is not None and setup.device.type == "cuda"
    optimizer = build_optimizer(params, stage, cfg.betas, cfg.eps, capturable=graphed)
    if saved is not None:
        ckpt.load_optimizer_state(saved, optimizer, names)
    data = _StageData(stage, setup, paths, cfg.seed + position.stage, store, cfg.features_on_device,
                      head.units if head is not None else None, cache, edge_silence(cfg))  # fmt: skip
    if graphed:
        # the step seed only drives SpecAugment and reading exercises, which a cached stage has none of (its
        # audio_time_masks draw on the device's generator)
        graph_step = GraphedSteps(lambda b: _loss(model, head, b, cfg, stage, 0, cache), list(params.values()),
                                  optimizer, cfg.grad_clip, cache.pad_index)  # fmt: skip
    # a stage that trains the encoder alone (CTC): its forward and backward from graphs, the rest eager
    encoder_only = set(stage.trainable) == {"encoder"} and not stage.ce_weight
    graphed_encoder = None
    if cfg.cuda_graphs_encoder and setup.device.type == "cuda" and encoder_only:
        graphed_encoder = GraphedEncoder(model.audio.encoder)
    if stage.init_feature_stats and position.step == 0:
        first = data.finish(data.build(0, list(range(min(FEATURE_STATS_ROWS, len(data.rows))))), setup.device)
        set_feature_stats_(model, first.features.cpu(), first.feature_lengths.cpu())
    log.info("stage %s: %d trainable parameters (%s), lora %s", stage.name,
             sum(p.numel() for p in params.values()), ", ".join(stage.trainable), stage.lora)  # fmt: skip

    def record(entry: dict) -> None:
        history.append(entry)
        if on_record is not None:
            on_record(entry)

    def checkpoint(pos: ckpt.Position) -> None:
        out = ckpt.checkpoint_dir(run_dir, pos.global_step)
        ckpt.save_official(model, setup.official, setup.tokenizer_dir, out, cfg.save_dtype, cfg.shard_mb)
        meta = {"train_config": to_dict(cfg), "history": history}
        ckpt.save_training_state(out, model, optimizer, names, pos, meta, extra)

    def finished(pos: ckpt.Position) -> bool:
        clock = stage.max_seconds > 0 and pos.elapsed_s >= stage.max_seconds
        return pos.step >= stage.max_steps or clock

    # wall clock of this process in the stage, beside elapsed_s (training steps only): the gap is time spent
    # waiting for batches and evaluating (run 7's text stage: 142 s of wall for 85 s of steps)
    wall_start = time.perf_counter()
    while not finished(position):
        # plain text batches are cheap to build; reading exercises (prompts) took 57 s of run 7's 142 s text stage.
        # Batches for cached encoder outputs are prompts only, built here: with 14 loading workers the asr stage's
        # steps took 21.4 ms against 18.7 ms without (H100, runs 11 and 10)
        loads_audio = stage.data == "speech" and not stage.cache_encoder
        workers = cfg.num_workers if loads_audio or stage.reading_fraction else 0
        batches = iter(data.loader(position.epoch, position.batch, workers))
        # a step's time runs from asking for its batch to the next such moment: waiting for data counts, and
        # the device is not synchronised per step (a graphed step's GPU work overlaps building the next batch;
        # the reads of loss and norm at each log line bound how far the host runs ahead)
        start = time.perf_counter()
        for batch in batches:
            lr = lr_at(stage, position.step, position.elapsed_s)
            seed = cfg.seed * 1_000_003 + position.global_step
            if graphed:
                loss, norm = graph_step(batch, lr)
            else:
                loss, norm = _step(model, head, data.finish(batch, setup.device), optimizer, params, cfg, stage, lr,
                                   seed, cache, graphed_encoder)  # fmt: skip
            now = time.perf_counter()
            position = dataclasses.replace(
                position, step=position.step + 1, global_step=position.global_step + 1,
                batch=position.batch + 1, elapsed_s=position.elapsed_s + now - start,
            )  # fmt: skip
            done = finished(position)
            if position.step % cfg.log_every == 0 or done or position.step == 1:
                record({"global_step": position.global_step, "stage": stage.name, "step": position.step,
                        "loss": float(loss), "lr": lr, "grad_norm": float(norm),
                        "elapsed_s": round(position.elapsed_s, 2),
                        "wall_s": round(time.perf_counter() - wall_start, 2)})  # fmt: skip
            start = now  # a log line's wait for the device counts towards the next step
            periodic = stage.eval_every and position.step % stage.eval_every == 0
            if dev and stage.data == "speech" and (periodic or done):
                _evaluate(model, head, setup, stage, dev, position, record)
                start = time.perf_counter()
            stop = stop_at_step is not None and position.global_step >= stop_at_step
            if done or stop or (stage.save_every and position.step % stage.save_every == 0):
                checkpoint(position)
                start = time.perf_counter()
            if done or stop:
                return position
        position = dataclasses.replace(position, epoch=position.epoch + 1, batch=0)
    return position


def _evaluate(model, head, setup: TrainSetup, stage: StageConfig, dev: list[Row], position, record) -> None:
    # transcription only: translation (direct and CoT) is scored on the held-out set, and BLEU into
    # Japanese needs MeCab, which a training machine need not have. A stage without the decoder's loss
    # is scored by its CTC head alone.
    tasks = (Task.ASR,) if stage.ce_weight else ()
    start = time.perf_counter()
    scores = evaluate_dev(model, setup.tokenizer, dev, tasks, head if stage.ctc_weight else None)
    record({"global_step": position.global_step, "stage": stage.name, "step": position.step, "dev": scores,
            "eval_s": round(time.perf_counter() - start, 1)})  # fmt: skip
    log.info("step %d dev %s", position.global_step, scores)
