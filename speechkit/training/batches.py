"""Training examples and length-bucketed batches that resume at an exact position.

Speech batches are packed by padded audio seconds (batch size x longest clip), text batches by padded
tokens. Every random choice (tie-breaks inside a length bucket, the batch order, the task of each
utterance) is a function of the seed and the epoch, so a run restarted at (epoch, batch) sees the
same batches as the run it continues.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechkit.audio import SAMPLE_RATE, LogMelFrontend, Waveform, load_audio
from speechkit.audio.features import WIN_LENGTH, num_audio_tokens
from speechkit.errors import DataError
from speechkit.text.prompts import COT_SEPARATOR, PromptSpec, Task, encode_prompt
from speechkit.text.tokenizer import Tokenizer
from speechkit.training.ctc import CtcUnits

IGNORE = -100  # label of positions without loss (prompt, audio, padding)


@dataclass(frozen=True)
class Row:
    """One manifest line: audio (None for text-only rows), its transcript and translation."""

    id: str
    audio: Path | None
    duration: float
    src_lang: str
    tgt_lang: str | None
    text: str
    translation: str | None
    speak: str = ""  # what the synthesizer read (kana, pinyin); empty: the transcript itself
    phonemes: str = ""  # what it said, in IPA (recipes/synthetic_demo/phonemize.py); empty: not known

    @property
    def reading(self) -> str:
        return self.speak or self.text


def read_rows(manifest: str | Path, with_audio: bool) -> list[Row]:
    """Rows of a JSONL manifest; ``with_audio`` requires ``audio_filepath`` (relative to the manifest)
    and ``duration``, as written by the synthesis step."""
    path = Path(manifest)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            d = json.loads(line)
            if with_audio and ("audio_filepath" not in d or "duration" not in d):
                raise DataError(f"{path}:{number}: no audio_filepath/duration; synthesize the split first")
            audio = path.parent / d["audio_filepath"] if with_audio else None
            rows.append(Row(d["id"], audio, float(d.get("duration") or 0.0), d["src_lang"], d.get("tgt_lang"),
                            d["text"], d.get("translation"), d.get("speak") or "",
                            d.get("phonemes") or ""))  # fmt: skip
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def unit_interval(*parts: object) -> float:
    """A deterministic number in [0, 1) from its parts (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def plan_batches(costs: Sequence[float], budget: float, seed: int, epoch: int) -> list[list[int]]:
    """Index lists whose padded cost (count x largest cost) stays within ``budget``, in shuffled order.

    Items are sorted by cost with a random tie-break of up to 5 %, so similar lengths share a batch
    but the neighbours change between epochs. An item costing more than ``budget`` forms its own batch.
    """
    order = sorted(range(len(costs)), key=lambda i: costs[i] * (1 + 0.05 * unit_interval(seed, epoch, i)))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * costs[i] > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    batches.sort(key=lambda b: unit_interval(seed, epoch, "batch", b[0]))
    return batches


def choose_task(tasks: dict[str, float], seed: int, epoch: int, row: Row) -> Task:
    """The task of an utterance in an epoch, drawn with the stage's weights; a row without a translation
    (a spliced sentence) is transcribed."""
    if row.translation is None:
        return Task.ASR
    u = unit_interval(seed, epoch, "task", row.id) * sum(tasks.values())
    for name, weight in tasks.items():
        u -= weight
        if u < 0:
            return Task(name)
    return Task(next(reversed(tasks)))


def answer_text(row: Row, task: Task) -> str:
    """The target text of a task: transcript, translation, or transcript <sep> translation."""
    if task is Task.ASR:
        return row.text
    if row.translation is None or row.tgt_lang is None:
        raise DataError(f"{row.id}: task {task.value} needs a translation and tgt_lang")
    if task is Task.AST:
        return row.translation
    return f"{row.text} {COT_SEPARATOR} {row.translation}"


@dataclass(frozen=True)
class Batch:
    """Right-padded training batch. ``labels`` are the next-token targets aligned with ``input_ids``
    (IGNORE where no loss); ``features``/``feature_lengths`` are absent for text batches. A speech batch
    built without a front end carries its waveforms instead (``waves``/``wave_lengths``), for features
    computed on the training device."""

    input_ids: torch.Tensor  # (B, L) int64
    labels: torch.Tensor  # (B, L) int64
    features: torch.Tensor | None  # (B, T, 80) float32 log-mel
    feature_lengths: torch.Tensor | None  # (B,) int64 valid frames
    asr_rows: torch.Tensor | None = None  # (B,) bool: the answer is the transcript (CTC applies)
    pad_id: int = 0  # the padding id of input_ids
    waves: torch.Tensor | None = None  # (B, N) float32 16 kHz samples, right-padded with 0
    wave_lengths: torch.Tensor | None = None  # (B,) int64 valid samples
    ctc_targets: torch.Tensor | None = None  # the ASR rows' CTC labels, concatenated (see CtcUnits)
    ctc_target_lengths: torch.Tensor | None = None  # (ASR rows,) int64
    reading_ids: torch.Tensor | None = None  # (reading rows, S) token ids whose embeddings fill the audio slots
    reading_lengths: torch.Tensor | None = None  # (reading rows,) int64 audio slots of each
    # a batch for cached encoder outputs: (B, L) int64, the cache row of each position's audio embedding
    # (EncoderCache.sources; its zero row where the position is not audio)
    audio_source: torch.Tensor | None = None

    def pin_memory(self) -> Batch:
        """The batch with its host tensors in page-locked memory (DataLoader's ``pin_memory`` calls this), so
        copies to the GPU run asynchronously."""
        pinned = {f.name: getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)
                  if isinstance(getattr(self, f.name), torch.Tensor)}  # fmt: skip
        return dataclasses.replace(self, **pinned)

    def to(self, device: torch.device) -> Batch:
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))  # noqa: E731
        # lengths and row flags stay on the host, where they are read (a device copy read back would wait for
        # the device)
        return Batch(move(self.input_ids), move(self.labels), move(self.features), move(self.feature_lengths),
                     self.asr_rows, self.pad_id, move(self.waves), self.wave_lengths,
                     move(self.ctc_targets), self.ctc_target_lengths, move(self.reading_ids),
                     self.reading_lengths, move(self.audio_source))  # fmt: skip


class AudioStore:
    """Training audio decoded once and held in memory as 16 kHz int16 (2 bytes a sample: 72 h = 8.3 GB),
    so an epoch costs no file reads. Loading processes forked after it is built share it read-only.

    Decoding runs on ``threads`` threads (libsndfile and the resampler release the GIL).
    """

    def __init__(self, rows: Sequence[Row], threads: int) -> None:
        paths = list(dict.fromkeys(r.audio for r in rows if r.audio is not None))
        with ThreadPoolExecutor(max(1, threads)) as pool:
            self._waves = dict(zip(paths, pool.map(_read_int16, paths), strict=True))

    def __getitem__(self, path: Path) -> Waveform:
        """The waveform of ``path`` (float32 in [-1, 1), at the rate ``load_audio`` gave it)."""
        samples, rate = self._waves[path]
        # one pass; scaling by 2^-15 is exact, so this equals astype(float32) / 32768
        return Waveform(np.multiply(samples, np.float32(1 / 32768), dtype=np.float32), rate, str(path))


def _read_int16(path: Path) -> tuple[np.ndarray, int]:
    # synthesized training audio is 16 kHz mono PCM_16: its samples as stored, read inside libsndfile (the
    # float path through load_audio adds Python steps under the GIL; run 9 took 50 s for 70k clips on 14
    # threads, 0.9 s -> 0.6 s for 520 clips on this 2-core box). Anything else goes through load_audio.
    try:
        with sf.SoundFile(str(path)) as f:
            if (f.samplerate, f.channels, f.subtype) == (SAMPLE_RATE, 1, "PCM_16") and f.frames >= WIN_LENGTH:
                return f.read(dtype="int16"), SAMPLE_RATE
    except (RuntimeError, sf.LibsndfileError):
        pass
    wave = load_audio(path)
    return np.clip(np.round(wave.samples * 32768.0), -32768, 32767).astype(np.int16), wave.sample_rate


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.int64)


def text_batch(token_lists: list[list[int]], tokenizer: Tokenizer, reading: list[bool] | None = None,
               stretch: int = 1) -> Batch:  # fmt: skip
    """Text batch: language modelling (predict every token after the first), or where ``reading[i]`` is
    True a reading exercise: the ASR prompt with ``stretch`` audio slots per token of the sentence, loss on
    the sentence and ``<|end|>``. The slots are filled with the sentence's token embeddings in training
    (``reading_ids``), so the decoder learns to read its audio slots in order before any audio exists.
    ``token_lists`` end with ``<|endoftext|>``, which a reading exercise replaces by ``<|end|>``.
    """
    pad = tokenizer.special.endoftext
    seqs, labels, slots = [], [], []
    prompt_text = PromptSpec(Task.ASR).text()
    for tokens, read in zip(token_lists, reading or [False] * len(token_lists), strict=True):
        if not read:
            seqs.append(tokens)
            labels.append(tokens[1:] + [IGNORE])
            continue
        answer = tokens[:-1] + [tokenizer.special.end]
        prompt = encode_prompt(tokenizer, prompt_text, stretch * (len(tokens) - 1))
        seqs.append(prompt + answer)
        labels.append([IGNORE] * (len(prompt) - 1) + answer + [IGNORE])
        slots.append([t for t in tokens[:-1] for _ in range(stretch)])
    if not slots:
        return Batch(_pad(seqs, pad), _pad(labels, IGNORE), None, None, None, pad)
    lengths = torch.tensor([len(s) for s in slots], dtype=torch.int64)
    return Batch(_pad(seqs, pad), _pad(labels, IGNORE), None, None, None, pad, reading_ids=_pad(slots, pad),
                 reading_lengths=lengths)  # fmt: skip


def speech_batch(rows: list[Row], tasks: list[Task], tokenizer: Tokenizer, frontend: LogMelFrontend | None,
                 store: AudioStore | None = None, ctc: CtcUnits | None = None,
                 edge_silence: EdgeSilence | None = None) -> Batch:  # fmt: skip
    """Prompted speech batch: loss on the answer tokens and the closing ``<|end|>`` only.

    Audio comes from ``store`` when given, else from the files, with ``edge_silence`` added. Without a
    ``frontend`` the batch carries the padded waveforms instead of features (see :class:`Batch`). With
    ``ctc`` units the batch carries the ASR rows' CTC labels.
    """
    waves = training_waves(rows, store, edge_silence)
    tokens = [num_audio_tokens(len(w.samples), w.sample_rate) for w in waves]
    input_ids, labels = _prompted(rows, tasks, tokenizer, tokens)
    pad = tokenizer.special.endoftext
    asr = torch.tensor([task is Task.ASR for task in tasks])
    ctc_fields = {}
    if ctc is not None:
        labels_of = [ctc.encode(r.text, ctc.reading_of(r)) for r, t in zip(rows, tasks, strict=True) if t is Task.ASR]
        ctc_fields = {"ctc_targets": torch.tensor([i for seq in labels_of for i in seq], dtype=torch.int64),
                      "ctc_target_lengths": torch.tensor([len(seq) for seq in labels_of], dtype=torch.int64)}
    if frontend is None:
        odd = [r.audio for r, w in zip(rows, waves, strict=True) if w.sample_rate != SAMPLE_RATE]
        if odd:
            raise DataError(f"{odd[0]}: {SAMPLE_RATE} Hz audio only when features are computed on the device; "
                            "set train.features_on_device=false")  # fmt: skip
        padded, lengths = padded_waves(waves)
        return Batch(input_ids, labels, None, None, asr, pad, padded, lengths, **ctc_fields)
    feats = frontend([w.samples for w in waves], [w.sample_rate for w in waves])
    return Batch(input_ids, labels, feats.values.float(), feats.lengths.long(), asr, pad, **ctc_fields)


@dataclass(frozen=True)
class EdgeSilence:
    """Up to ``max_s`` seconds of zeros before and after every training clip, each length drawn from
    (``seed``, side, row id): fixed per clip, so cached encoder outputs and resumed runs see the same audio."""

    max_s: float
    seed: int

    def __call__(self, wave: Waveform, row_id: str) -> Waveform:
        before, after = (round(self.max_s * unit_interval(self.seed, "silence", side, row_id) * wave.sample_rate)
                         for side in ("before", "after"))  # fmt: skip
        samples = np.zeros(before + len(wave.samples) + after, np.float32)
        samples[before : before + len(wave.samples)] = wave.samples
        return Waveform(samples, wave.sample_rate, wave.source)


def training_waves(rows: Sequence[Row], store: AudioStore | None, edge_silence: EdgeSilence | None) -> list[Waveform]:
    """The rows' audio (from ``store`` when given, else the files), with ``edge_silence`` added when given."""
    waves = [store[r.audio] if store is not None else load_audio(r.audio) for r in rows]
    if edge_silence is None:
        return waves
    return [edge_silence(w, r.id) for w, r in zip(waves, rows, strict=True)]


def padded_waves(waves: Sequence[Waveform]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, longest) float32 samples right-padded with 0, and (B,) int64 valid samples."""
    lengths = torch.tensor([len(w.samples) for w in waves], dtype=torch.int64)
    padded = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, wave in enumerate(waves):
        padded[i, : len(wave.samples)] = torch.from_numpy(wave.samples)
    return padded, lengths


def cached_batch(rows: list[Row], tasks: list[Task], tokenizer: Tokenizer, audio_tokens: list[int],
                 sources) -> Batch:  # fmt: skip
    """Prompted batch for cached encoder outputs (``audio_tokens[i]`` of row i): the prompts, and where each
    audio position's output sits in the cache (``sources(row_ids, input_ids)``, see
    :meth:`speechkit.training.encoder_cache.EncoderCache.sources`)."""
    input_ids, labels = _prompted(rows, tasks, tokenizer, audio_tokens)
    asr = torch.tensor([task is Task.ASR for task in tasks])
    source = sources([r.id for r in rows], input_ids)
    return Batch(input_ids, labels, None, None, asr, tokenizer.special.endoftext, audio_source=source)


def _prompted(rows: list[Row], tasks: list[Task], tokenizer: Tokenizer,
              audio_tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Padded prompt + answer ids and their labels: loss on the answer tokens and the closing ``<|end|>``."""
    seqs, labels = [], []
    end = tokenizer.special.end
    for row, task, count in zip(rows, tasks, audio_tokens, strict=True):
        prompt = _prompt_ids(tokenizer, task, None if task is Task.ASR else row.tgt_lang, count)
        answer = tokenizer.encode(answer_text(row, task)) + [end]
        seq = [*prompt, *answer]
        target = [IGNORE] * len(seq)
        target[len(prompt) - 1 : len(seq) - 1] = answer  # position t predicts token t + 1
        seqs.append(seq)
        labels.append(target)
    return _pad(seqs, tokenizer.special.endoftext), _pad(labels, IGNORE)


@lru_cache(maxsize=8192)
def _prompt_ids(tokenizer: Tokenizer, task: Task, language: str | None, audio_tokens: int) -> tuple[int, ...]:
    """The prompt of a task (few distinct ones, each at a few hundred clip lengths): encoded once, not per row."""
    return tuple(encode_prompt(tokenizer, PromptSpec(task, language=language).text(), audio_tokens))


def with_features(batch: Batch, frontend: LogMelFrontend) -> Batch:
    """``batch`` with its waveforms (if it carries any) replaced by log-mel features from ``frontend``."""
    if batch.waves is None:
        return batch
    feats = frontend.padded(batch.waves, batch.wave_lengths)
    return dataclasses.replace(batch, features=feats.values.float(), feature_lengths=feats.lengths.long(),
                               waves=None, wave_lengths=None)  # fmt: skip


class BatchSource(torch.utils.data.Dataset):
    """The batches of one epoch as a map-style dataset (item i = batch i), so DataLoader workers can
    build them in parallel while the order stays the plan's."""

    def __init__(self, plan: list[list[int]], build) -> None:
        self.plan = plan
        self.build = build

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        return self.build(self.plan[i])


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one core per loading process; they already run in parallel
