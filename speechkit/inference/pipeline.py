"""Tasks over a loaded speech model: transcribe, translate (direct or chain-of-thought), summarize, ask.

Clips are sorted by length and decoded in batches (features, encoder and decoder batched), then
returned in input order. The single-clip path is canonical: batching does not change results (fp32).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from speechkit.audio import SAMPLE_RATE, LogMelFrontend, Waveform, load_audio
from speechkit.errors import ConfigError, DeviceMemoryError, SpeechkitError
from speechkit.inference.audio_graphs import AudioGraphs
from speechkit.inference.beam import beam_search
from speechkit.inference.continuous import generate_continuous, split_clips
from speechkit.inference.fast_generate import StepCache, generate_fast
from speechkit.inference.generate import Generation, generate
from speechkit.model.attention import STEP_SDPA_FROM_BATCH
from speechkit.model.encoder import EncoderOutput
from speechkit.model.loader import LoadedModel, LoraMode, load_speech_model
from speechkit.text.prompts import PromptSpec, Task, encode_prompt, resolve_language, split_cot

AudioInput = str | Path | bytes | np.ndarray | torch.Tensor | Waveform

# default cap on new tokens: a fixed allowance plus a rate per second of audio, generous next
# to speech (about 3 words/s); chain of thought emits two texts; free-form answers get a flat cap
_BASE_NEW_TOKENS = 32
_NEW_TOKENS_PER_SECOND = {Task.ASR: 8.0, Task.AST: 8.0, Task.AST_COT: 16.0}
_FREE_FORM_NEW_TOKENS = 1024


def default_max_new_tokens(task: Task, duration_s: float) -> int:
    """Cap on generated tokens when the user sets none, scaled to the audio duration."""
    rate = _NEW_TOKENS_PER_SECOND.get(task)
    if rate is None:
        return _FREE_FORM_NEW_TOKENS
    return _BASE_NEW_TOKENS + math.ceil(rate * duration_s)


@dataclass(frozen=True)
class DecodeOptions:
    """Run-time decoding options (the CLI flags mirror these fields)."""

    batch_size: int = 8
    max_new_tokens: int | None = None  # None: scaled to each clip's duration
    # batches decoded as one group: batch_size rows, each refilled with the group's next clip as soon as its
    # own stops (continuous batching, speechkit.inference.continuous); 1: fixed batches
    group_batches: int = 1
    # hypotheses kept per clip (speechkit.inference.beam); 1: greedy decoding (on a GPU, the CUDA-graph path)
    beam_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if self.beam_size < 1:
            raise ConfigError(f"beam_size={self.beam_size} must be >= 1")
        if self.group_batches < 1:
            raise ConfigError(f"group_batches={self.group_batches} must be >= 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")


@dataclass(frozen=True)
class Result:
    """One clip's output. ``text`` is the task's output (the translation for AST and CoT; the whole
    output when a CoT answer has no ``<sep>``); ``transcript``/``translation`` are the CoT parts."""

    source: str
    task: str
    language: str | None
    target_language: str | None
    text: str
    transcript: str | None
    translation: str | None
    tokens: tuple[int, ...]
    avg_logprob: float
    flags: tuple[str, ...]
    duration: float


class Pipeline:
    """A loaded model plus its tokenizer and front end; every task is a plain method call.

    On CUDA, ``decode_steps`` keeps the last few captured decode steps (each with its KV cache: up to
    ~4-5 GB at batch 64 on the released model) so later requests skip the capture;
    ``decode_steps.clear()`` frees them. ``audio_graphs`` likewise keeps the audio tower's captured
    graphs per batch size and 2.56 s length bucket (:class:`~speechkit.inference.audio_graphs.AudioGraphs`).

    A batch that runs the GPU out of memory is decoded again in halves, and ``max_batch`` (None: no cap)
    keeps the size that fitted for every later batch, with one warning: a run asked for more than the card
    holds slows down instead of stopping.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.model.decoder.embed_tokens.weight.device
        self.frontend = LogMelFrontend(self.device)
        self.decode_steps = StepCache()
        self.audio_graphs = AudioGraphs(self.model.audio) if self.device.type == "cuda" else None
        self.max_batch: int | None = None

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        lora: LoraMode = "merged",
    ) -> Pipeline:
        """Load a checkpoint (hub id or directory); ``auto`` picks CUDA + bf16 when available, else CPU + fp32."""
        dev = resolve_device(device)
        return cls(load_speech_model(model, device=dev, dtype=resolve_dtype(dtype, dev), lora=lora))

    def warm_up(self, max_batch: int = 2) -> None:
        """On CUDA, decode requests of faint noise (1 s at batch 1, then 1 s + 2 s at batch 2) so that the
        decode step's layer compilation (for one shape, then shape-generic: ~10 s on an H200 with a cold
        compile cache) and the first graph captures happen now, not in a user's first request; with
        ``max_batch`` (the largest batch to come) at or above
        :data:`~speechkit.model.attention.STEP_SDPA_FROM_BATCH`, also a batch of that size, whose step
        attention takes the SDPA branch and compiles once more (3-5 s on an H200). No-op on CPU."""
        if self.device.type != "cuda":
            return
        rng = np.random.default_rng(0)
        batches = [[1.0], [1.0, 2.0]] + ([[1.0] * max_batch] if max_batch >= STEP_SDPA_FROM_BATCH else [])
        for seconds in batches:
            noise = [load_audio(rng.normal(0.0, 0.01, round(s * SAMPLE_RATE)).astype(np.float32),
                                sample_rate=SAMPLE_RATE) for s in seconds]  # fmt: skip
            self.run(noise, PromptSpec(Task.ASR), DecodeOptions(batch_size=len(noise), max_new_tokens=4))

    def transcribe(
        self,
        audio: Sequence[AudioInput],
        *,
        language: str | None = None,
        prompt: str | None = None,
        options: DecodeOptions = DecodeOptions(),
    ) -> list[Result]:
        """Speech recognition; ``language`` is a recorded hint (the model's ASR prompt is language-agnostic)."""
        if language is not None:
            resolve_language(language)
        return self.run(audio, PromptSpec(Task.ASR, context=prompt), options, language=language)

    def translate(
        self,
        audio: Sequence[AudioInput],
        *,
        to: str,
        cot: bool = False,
        language: str | None = None,
        prompt: str | None = None,
        options: DecodeOptions = DecodeOptions(),
    ) -> list[Result]:
        """Speech translation into ``to``; ``cot`` first transcribes, then translates (split at ``<sep>``)."""
        spec = PromptSpec(Task.AST_COT if cot else Task.AST, language=to, context=prompt)
        return self.run(audio, spec, options, language=language)

    def summarize(
        self, audio: Sequence[AudioInput], *, prompt: str | None = None, options: DecodeOptions = DecodeOptions()
    ) -> list[Result]:
        return self.run(audio, PromptSpec(Task.SUMMARIZE, context=prompt), options)

    def ask(
        self, audio: Sequence[AudioInput], *, prompt: str | None = None, options: DecodeOptions = DecodeOptions()
    ) -> list[Result]:
        """Spoken question answering: the question is in the audio (empty task prompt)."""
        return self.run(audio, PromptSpec(Task.QA, context=prompt), options)

    def run(
        self,
        audio: Sequence[AudioInput],
        spec: PromptSpec,
        options: DecodeOptions = DecodeOptions(),
        *,
        language: str | None = None,
        on_result: Callable[[int, Result], None] | None = None,
        on_error: Callable[[int, SpeechkitError], None] | None = None,
    ) -> list[Result | None]:
        """Decode every clip with one prompt; results in input order.

        ``on_result(i, result)`` sees each result as soon as its batch is done. Without ``on_error``
        the first failure raises; with it, a failing clip is reported there (its slot stays None)
        and every other clip is still decoded.
        """
        waves: list[Waveform | None] = []
        for i, a in enumerate(audio):
            try:
                waves.append(a if isinstance(a, Waveform) else load_audio(a))
            except SpeechkitError as err:
                if on_error is None:
                    raise
                on_error(i, err)
                waves.append(None)
        order = sorted((i for i, w in enumerate(waves) if w is not None), key=lambda i: -waves[i].duration)
        results: list[Result | None] = [None] * len(waves)
        first = 0
        while first < len(order):
            if self.max_batch is not None and options.batch_size * options.group_batches > self.max_batch:
                options = replace(options, batch_size=min(options.batch_size, self.max_batch), group_batches=1)
            idx = order[first : first + options.batch_size * options.group_batches]
            first += len(idx)
            for i, result in self._decode_isolating(idx, waves, spec, options, language, on_error):
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
        return results

    def _decode_isolating(self, idx, waves, spec, options, language, on_error) -> list[tuple[int, Result]]:
        try:
            return list(zip(idx, self._decode_fitting([waves[i] for i in idx], spec, options, language), strict=True))
        except SpeechkitError as err:
            if on_error is None:
                raise
            if len(idx) == 1:
                on_error(idx[0], err)
                return []
        # a batch failed: decode its clips one by one so only the failing ones are lost
        done = []
        for i in idx:
            try:
                done.append((i, self._decode_fitting([waves[i]], spec, options, language)[0]))
            except SpeechkitError as err:
                on_error(i, err)
        return done

    def _decode_fitting(
        self, waves: list[Waveform], spec: PromptSpec, options: DecodeOptions, language: str | None
    ) -> list[Result]:
        """:meth:`_decode`; on a device out-of-memory error the kept graphs and cached blocks are freed and the
        clips decoded in two halves (recursively), the half size kept in ``max_batch``."""
        try:
            return self._decode(waves, spec, options, language)
        except torch.OutOfMemoryError as err:
            if len(waves) == 1:
                self._release_kept_memory()
                raise DeviceMemoryError(
                    f"{waves[0].source}: out of {self.device.type} memory decoding this clip alone; free memory "
                    f"on the device, or run with --device cpu"
                ) from err
        # retried outside the handler: the failed attempt's frames, and the tensors they hold, are gone
        self._release_kept_memory()
        half = (len(waves) + 1) // 2
        if self.max_batch is None or half < self.max_batch:
            warnings.warn(
                f"out of {self.device.type} memory decoding {len(waves)} clips at once: decoding at most {half} "
                f"at a time from now on (pass --batch-size {half} to start there)",
                stacklevel=2,
            )
            self.max_batch = half
        options = replace(options, batch_size=min(options.batch_size, half), group_batches=1)
        return [result for part in (waves[:half], waves[half:])
                for result in self._decode_fitting(part, spec, options, language)]  # fmt: skip

    def _release_kept_memory(self) -> None:
        """Drop the kept decode steps and audio-tower graphs and return cached blocks to the device."""
        self.decode_steps.clear()
        if self.audio_graphs is not None:
            self.audio_graphs = AudioGraphs(self.model.audio)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _decode(
        self, waves: list[Waveform], spec: PromptSpec, options: DecodeOptions, language: str | None
    ) -> list[Result]:
        parts = [self._encode(waves[first : first + options.batch_size])
                 for first in range(0, len(waves), options.batch_size)]  # fmt: skip
        text = spec.text()
        prompts = [encode_prompt(self.tokenizer, text, int(n)) for audio in parts for n in audio.lengths]
        caps = [options.max_new_tokens or default_max_new_tokens(spec.task, w.duration) for w in waves]
        context = self.model.config.decoder.rope.max_position_embeddings
        for wave, prompt, cap in zip(waves, prompts, caps, strict=True):
            if len(prompt) + cap > context:
                raise ConfigError(
                    f"{wave.source}: prompt of {len(prompt)} tokens plus {cap} new tokens exceeds the context of "
                    f"{context} tokens; split the audio (long-form) or lower --max-new-tokens"
                )
        # several batches: rows refilled as clips stop; else the CUDA-graph decode step on GPU, the plain loop on
        # CPU (the same tokens every way, fp32)
        kwargs = dict(max_new_tokens=caps, stop_ids=self.tokenizer.stop_ids)
        if options.beam_size > 1:  # each batch of clips x beams on the plain decoder
            gens, first = [], 0
            for audio in parts:
                last = first + len(audio.lengths)
                gens += beam_search(self.model, prompts[first:last], audio, beam_size=options.beam_size,
                                    max_new_tokens=caps[first:last], stop_ids=self.tokenizer.stop_ids,
                                    pad_id=self.tokenizer.special.endoftext)  # fmt: skip
                first = last
        elif len(parts) > 1:
            clips = [clip for audio in parts for clip in split_clips(audio)]
            gens = generate_continuous(self.model, prompts, clips, width=options.batch_size, **kwargs)
        elif self.device.type == "cuda":
            gens = generate_fast(self.model, prompts, parts[0], pad_id=self.tokenizer.special.endoftext,
                                 steps=self.decode_steps, **kwargs)  # fmt: skip
        else:
            gens = generate(self.model, prompts, parts[0], pad_id=self.tokenizer.special.endoftext, **kwargs)
        target = None if spec.language is None else resolve_language(spec.language).code
        return [self._result(w, g, spec.task, language, target) for w, g in zip(waves, gens, strict=True)]

    def _encode(self, waves: list[Waveform]) -> EncoderOutput:
        """Features and the audio tower for one batch (the tower's graphs on GPU)."""
        feats = self.frontend([w.samples for w in waves], [w.sample_rate for w in waves])
        lengths = feats.lengths if len(waves) > 1 else None
        tower = self.model.audio if self.audio_graphs is None else self.audio_graphs
        return tower(feats.values, lengths)

    def _result(self, wave: Waveform, gen: Generation, task: Task, language: str | None, target: str | None) -> Result:
        text = self.tokenizer.decode(gen.tokens).strip()
        flags = [] if gen.stop == "stop" else [gen.stop]  # "repetition" or "length"
        transcript = translation = None
        if task is Task.AST_COT:
            parts = split_cot(text)
            transcript, translation = parts.transcript, parts.translation
            if translation is None:
                flags.append("no_sep")  # the whole output stays in text
            else:
                text = translation
        return Result(
            wave.source,
            task.value,
            language,
            target,
            text,
            transcript,
            translation,
            gen.tokens,
            gen.avg_logprob,
            tuple(flags),
            wave.duration,
        )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda[:N]") from None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]
