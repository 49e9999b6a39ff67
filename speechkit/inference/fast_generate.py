"""Greedy decoding with the decode step captured in a CUDA graph (the GPU fast path).

Same results as :func:`speechkit.inference.generate.generate`: the same prefill, the same per-step
math, the same stop, loop and length rules (applied on the host to each step's tokens while the GPU
runs the next step: :class:`StepResults`). What changes is how a step is launched: every buffer the step touches is
allocated once (token, positions, cache slot, outputs), the step writes its argmax back into the
token buffer and advances positions and slot on the device, so on CUDA one graph replay runs a
whole step with no host work. On CPU (tests) the identical step runs eagerly. Its attention folds
the query heads of each KV head into one group (``group_queries``), so no kernel repeats the cache
per query head; fp32 results differ from the plain path's in summation order only.

Building a step costs two eager warm-up steps and a capture (tens of ms on the released model), so a
:class:`StepCache` keeps built steps across requests, keyed by batch size, cache capacity rounded up
to ``CAPACITY_BUCKET`` slots, RoPE regime and adapter state; each request re-fills the step's input
buffers and clears its cache tail (:meth:`DecodeStep.load`), so results do not depend on earlier ones.

With ``compile_layers`` (the default on CUDA when Triton, Inductor's GPU code generator, is installed)
the step runs each decoder layer through one ``torch.compile``d ``DecoderLayer.forward``
(:func:`compiled_layer`) before capturing it: Inductor fuses the small elementwise kernels between the
matmuls (norms, rotary, cache writes, gate, residual adds), which at batch 1 took about half of a step's
GPU time (an H200 step was 4.7 ms, its matmuls ~2.3 ms). On CUDA with Triton, below 16 sequences the rotary, cache
writes and attention are one kernel (:mod:`speechkit.model.decode_attention`), and at batch 1 the products are
matrix-vector kernels with the norms, gate, residual adds, the attention's merge and the LM head's norm fused in
(:mod:`speechkit.model.decode_gemv`), launched as programmatic dependents: 2.71 ms a step on an H200, 198 kernels.

Sequences that would cross LongRoPE's short/long threshold mid-generation take the plain path:
the official recompute cannot live inside a fixed graph.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import OrderedDict
from collections.abc import Callable

import torch

from speechkit.errors import ConfigError
from speechkit.inference.generate import Generation, LeftPadded, Row, advance, generate
from speechkit.model.decoder import DecoderLayer
from speechkit.model.encoder import EncoderOutput
from speechkit.model.kv_cache import KVCache
from speechkit.model.lora import LoRALinear
from speechkit.model.rope import Regime
from speechkit.model.speech_model import SpeechModel

CAPACITY_BUCKET = 256  # a kept step's cache slots are rounded up to a multiple of this
PREFILL_STEP = 64  # a prompt is padded up to a multiple of this many tokens: one prefill graph per length
# Prompts of more tokens than this (batch x padded length) prefill eagerly at their exact length: their kernels
# outlast the launches, so a graph saves nothing, while the padding costs up to PREFILL_STEP - 1 tokens a row
# (+16 % for a 30 s clip's 386) and each graph holds its activations. H200, 64 x 30 s: see eval/results/h200.
PREFILL_GRAPH_MAX_TOKENS = 2048
PREFILLS_KEPT = 4  # prefill graphs a step keeps (least recently used out)


def greedy_pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, vocab) fp32 logits -> (B,) log-probability of the argmax, (B,) argmax ids: the top logit minus the
    log-sum-exp, which multi-block reductions compute; ``log_softmax`` would write the whole (B, vocab) first,
    and at batch 1 its kernel spreads a 200K-wide row over one block (44 us a step on an H100)."""
    top, token = logits.max(dim=-1)
    return top - torch.logsumexp(logits, dim=-1), token


class DecodeStep:
    """One greedy decode step over static buffers, optionally captured as a CUDA graph.

    Buffers: ``token`` (B, 1) input ids (the step overwrites it with its argmax), ``position`` (B, 1)
    rotary positions, ``slot`` (1,) cache slot, ``mask`` (B, cache.max_len) padding mask; outputs ``best``
    (B,) argmax ids, ``logprob`` (B,) their log-probabilities, ``logits`` (B, vocab). A graph reads and
    writes these very tensors: change them in place only (:meth:`load`).

    ``ring=True`` (continuous batching, :mod:`speechkit.inference.continuous`): the slots form a ring (the
    write slot wraps at ``cache.max_len``) and ``mask`` is a boolean (B, cache.max_len) record of the slots
    each row attends to; each step adds its write slot to every row's, and :meth:`admit` sets a row's.
    """

    def __init__(self, model: SpeechModel, cache: KVCache, mask: torch.Tensor, regime: Regime,
                 use_graph: bool, compile_layers: bool = False, ring: bool = False) -> None:  # fmt: skip
        self.model, self.cache, self.mask, self.regime, self.ring = model, cache, mask, regime, ring
        self.layer_forward = compiled_layer() if compile_layers else None
        batch, device = mask.shape[0], mask.device
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = self._capture() if use_graph else None
        self._prefills: OrderedDict[tuple[int, bool], Prefill] = OrderedDict()
        self._prefill_pool = torch.cuda.graph_pool_handle() if use_graph else None

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Run the prompt, (B, n, hidden) ``embeds`` at (B, n) ``positions`` (``mask``: (B, n) for a
        left-padded batch, else None), into slots 0..n-1 of the cache; the (B, hidden) final hidden state of
        its last token. Padded to a multiple of :data:`PREFILL_STEP` tokens (a graph per length on CUDA), or
        beyond :data:`PREFILL_GRAPH_MAX_TOKENS` run as it is."""
        n = embeds.shape[1]
        length = min(-(-n // PREFILL_STEP) * PREFILL_STEP, self.cache.max_len)
        if embeds.shape[0] * length > PREFILL_GRAPH_MAX_TOKENS:
            hidden = self.model.decoder(embeds, positions, cache=self.cache, attention_mask=mask, regime=self.regime,
                                        prefill=True)  # fmt: skip
            return hidden[:, -1]
        key = (length, mask is not None)
        run = self._prefills.pop(key, None)
        if run is None:
            while len(self._prefills) >= PREFILLS_KEPT:
                self._prefills.popitem(last=False)
            run = Prefill(self, length, mask is not None, self._prefill_pool)
        self._prefills[key] = run
        return run(embeds, positions, mask)

    def _step(self) -> None:
        decoder = self.model.decoder
        embeds = decoder.embed(self.token)
        if self.ring:
            self.mask.index_fill_(1, self.slot, True)
            bias = torch.zeros(self.mask.shape, dtype=embeds.dtype, device=embeds.device)
            bias = bias.masked_fill_(~self.mask, float("-inf"))[:, None, None]
            masks = dict(attention_bias=bias)
        else:
            masks = dict(attention_mask=self.mask)
        hidden = decoder(embeds, self.position, cache=self.cache, cache_position=self.slot, regime=self.regime,
                         group_queries=True, layer_forward=self.layer_forward, final_norm=False, **masks)  # fmt: skip
        self.logits = decoder.step_logits(hidden[:, -1])
        self.logprob, self.best = greedy_pick(self.logits)
        self.token.copy_(self.best[:, None])
        self.position.add_(1)
        self.slot.add_(1)
        if self.ring:
            self.slot.remainder_(self.cache.max_len)

    def admit(self, row: int, source: KVCache, length: int, token: torch.Tensor) -> None:
        """Ring steps: start ``row`` on a prompt prefilled into slots 0..length-1 of the batch-1 ``source``
        cache. Its keys and values go to the ``length`` slots before the next write slot (wrapping), which
        become the row's only attended slots; ``token`` (1,) is its first generated token, the next step's
        input, at position ``length``. Other rows are untouched; no host sync."""
        slots = torch.arange(length, device=self.slot.device).add_(self.slot - length).remainder_(self.cache.max_len)
        for layer in range(len(self.cache.keys)):
            for ring_buffer, prompt_buffer in zip(self.cache.layer(layer), source.layer(layer), strict=True):
                ring_buffer[row].index_copy_(1, slots, prompt_buffer[0, :, :length])
        self.mask[row].fill_(False)
        self.mask[row].index_fill_(0, slots, True)
        self.token[row].copy_(token)
        self.position[row].fill_(length)

    def _capture(self) -> torch.cuda.CUDAGraph:
        # warm up on a side stream (allocator and kernel selection), then capture; the step's
        # side effects during warm-up are undone by the caller, which sets every buffer before use
        saved = [t.clone() for t in (self.token, self.position, self.slot)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        for buf, value in zip((self.token, self.position, self.slot), saved, strict=True):
            buf.copy_(value)
        return graph

    def load(self, mask: torch.Tensor, token: torch.Tensor, position: torch.Tensor, prompt_len: int) -> None:
        """Set every input for a new request whose prompt fills slots 0..prompt_len-1 (prefill first).

        ``mask`` (B, <= max_len) is the request's padding mask; slots past it count as real (future
        slots, hidden by causality). ``token``/``position`` (B, 1) are the first decode step's inputs.
        Cache slots from ``prompt_len`` on are zeroed: masked slots never weigh in, but a non-finite
        value left by an earlier request would (NaN * 0), so a reused step starts as a fresh one.
        """
        width = mask.shape[1]
        self.mask[:, :width].copy_(mask)
        self.mask[:, width:].fill_(1)
        self.token.copy_(token)
        self.position.copy_(position)
        self.slot.fill_(prompt_len)
        for buf in (*self.cache.keys, *self.cache.values):
            buf[:, :, prompt_len:].zero_()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()


def triton_available() -> bool:
    """Whether Inductor can generate GPU code here (without Triton, e.g. some Windows wheels, a compile fails)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def compiled_layer() -> Callable[..., torch.Tensor]:
    """``DecoderLayer.forward`` under ``torch.compile`` (Inductor, without CUDA graphs of its own: the decode
    step captures its calls). Layers differ only in weights and cache buffers, which are its inputs, so one
    compiled code serves all of them; a second batch size or cache capacity makes it shape-generic."""
    return torch.compile(DecoderLayer.forward, fullgraph=True)


class Prefill:
    """The prompt's forward pass into a :class:`DecodeStep`'s cache at one padded length, as a CUDA graph
    when the step has one.

    The prompt fills the first positions; the padding after it (zero embeddings, later positions, mask 1)
    comes after every real token, so causality keeps it out of them. Its cache slots are cleared by
    :meth:`DecodeStep.load` before decoding. Buffers: ``embeds`` (B, length, hidden), ``positions`` and
    ``mask`` (B, length), ``last`` (1,) the index of the prompt's last token; output ``hidden`` (B, 1, hidden).
    """

    def __init__(self, step: DecodeStep, length: int, masked: bool, pool: tuple | None) -> None:
        self.step = step
        batch, device = step.mask.shape[0], step.mask.device
        weight = step.model.decoder.embed_tokens.weight
        self.embeds = torch.zeros(batch, length, weight.shape[1], dtype=weight.dtype, device=device)
        self.positions = torch.arange(length, device=device).repeat(batch, 1)
        self.mask = torch.ones(batch, length, dtype=torch.long, device=device) if masked else None
        self.last = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = None
        if step.graph is not None:
            stream = torch.cuda.Stream()  # kernel selection and workspaces before the capture
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._run()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self._run()

    def _run(self) -> None:
        step = self.step
        hidden = step.model.decoder(self.embeds, self.positions, cache=step.cache, attention_mask=self.mask,
                                    regime=step.regime, prefill=True)  # fmt: skip
        self.hidden = hidden.index_select(1, self.last)

    def __call__(self, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n = embeds.shape[1]
        self.embeds[:, :n].copy_(embeds)
        self.embeds[:, n:].zero_()
        self.positions[:, :n].copy_(positions)
        tail = torch.arange(1, self.embeds.shape[1] - n + 1, device=positions.device)
        self.positions[:, n:].copy_(positions[:, -1:] + tail)
        if mask is not None:
            self.mask[:, :n].copy_(mask)
            self.mask[:, n:].fill_(1)
        self.last.fill_(n - 1)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._run()
        return self.hidden[:, 0]


class StepCache:
    """Built decode steps kept across requests, the least recently used dropped beyond ``max_entries``.

    A step is reused for a request with the same model, batch size, RoPE regime, adapter state, dtype
    and device whose prompt + new tokens fit the same capacity bucket (``bucket`` slots). Memory: each
    entry holds its KV cache, batch x capacity x 2 x layers x kv_heads x head_dim x element size (on the
    released model in bf16, 128 KiB per slot: ~4.3 GB at batch 64 x 512 slots, 67 MB at batch 1), plus
    its graph's intermediates (logits: ~10 bytes x batch x vocab, 0.13 GB at batch 64). :meth:`clear`
    frees them (call ``torch.cuda.empty_cache()`` after it to hand the memory back to the driver). Not
    thread-safe: one request at a time (the server runs the model on one thread).
    """

    def __init__(self, max_entries: int = 3, bucket: int = CAPACITY_BUCKET) -> None:
        if max_entries < 1 or bucket < 1:
            raise ConfigError(f"StepCache needs max_entries >= 1 and bucket >= 1, got {max_entries=}, {bucket=}")
        self.max_entries, self.bucket = max_entries, bucket
        self._steps: OrderedDict[tuple, DecodeStep] = OrderedDict()

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        self._steps.clear()

    def get(self, model: SpeechModel, batch: int, total: int, regime: Regime, use_graph: bool,
            compile_layers: bool = False) -> DecodeStep:  # fmt: skip
        """A step for ``batch`` rows of up to ``total`` tokens: a kept one, or a new one (kept)."""
        decoder = model.decoder
        weight = decoder.embed_tokens.weight
        capacity = -(-total // self.bucket) * self.bucket
        # id(model) cannot be recycled while a kept step holds the model; a captured graph bakes in the
        # adapter's Python branch, so the LoRA state is part of the key
        adapter = decoder.lora_state, all(m.enabled for m in decoder.modules() if isinstance(m, LoRALinear))
        key = (id(model), batch, capacity, regime, adapter, weight.dtype, weight.device, use_graph, compile_layers)
        step = self._steps.pop(key, None)
        if step is None:
            while len(self._steps) >= self.max_entries:
                self._steps.popitem(last=False)  # free before allocating the new cache
            cache = decoder.allocate_cache(batch, capacity)
            mask = torch.ones(batch, capacity, dtype=torch.long, device=weight.device)
            step = DecodeStep(model, cache, mask, regime, use_graph, compile_layers)
        self._steps[key] = step
        return step


@torch.inference_mode()
def generate_fast(
    model: SpeechModel,
    prompts: list[list[int]],
    audio: EncoderOutput | None,
    *,
    max_new_tokens: list[int],
    stop_ids: tuple[int, ...],
    pad_id: int,
    detect_loops: bool = True,
    use_graph: bool | None = None,
    compile_layers: bool | None = None,
    steps: StepCache | None = None,
) -> list[Generation]:
    """Drop-in for :func:`~speechkit.inference.generate.generate` (same arguments, same results).

    ``use_graph`` defaults to True on CUDA, ``compile_layers`` (see the module doc) on CUDA with Triton.
    ``steps`` keeps built steps for later calls (without it, each call builds and captures its own). Falls
    back to the plain path when generation would cross the RoPE regime threshold.
    """
    decoder = model.decoder
    batch = LeftPadded.build(model, prompts, max_new_tokens, pad_id)
    ids, mask, positions, prompt_len = batch.ids, batch.mask, batch.positions, batch.prompt_len
    total, device = ids.shape[1], ids.device
    if decoder.regime_for(prompt_len) != decoder.regime_for(total):
        return generate(model, prompts, audio, max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id,
                        detect_loops=detect_loops)  # fmt: skip
    use_graph = device.type == "cuda" if use_graph is None else use_graph
    if compile_layers is None:
        compile_layers = device.type == "cuda" and triton_available()
    padded = batch.padded
    regime = decoder.regime_for(prompt_len)
    if steps is None:
        step = DecodeStep(model, decoder.allocate_cache(len(prompts), total), mask, regime, use_graph, compile_layers)
    else:
        step = steps.get(model, len(prompts), total, regime, use_graph, compile_layers)

    last = step.prefill(model.embed_inputs(ids[:, :prompt_len], audio), positions[:, :prompt_len],
                        mask[:, :prompt_len] if padded else None)  # fmt: skip
    logprob, token = greedy_pick(decoder.logits(last).float())
    step.load(mask, token[:, None], positions[:, prompt_len - 1 : prompt_len] + 1, prompt_len)
    rows = [Row(n, [], detect_loops) for n in max_new_tokens]
    results = StepResults(len(prompts), max(max_new_tokens), device)
    results.push(0, token, logprob)  # the prefill gave the first token
    stops = frozenset(stop_ids)

    def settle(index: int) -> bool:  # True when every row has stopped
        tokens, logprobs = results.read(index)
        advance(rows, tokens, logprobs, [t in stops for t in tokens])
        return all(r.stop is not None for r in rows)

    last = max(max_new_tokens) - 1
    for index in range(1, last + 1):
        step()
        results.push(index, step.best, step.logprob)
        if settle(index - 1):  # step ``index`` already runs: at most one step past the end
            break
    else:
        settle(last)
    return [Generation(tuple(r.tokens), r.logprob / r.sampled, r.stop) for r in rows]


class StepResults:
    """Each decode step's (B,) tokens and log-probabilities copied to the host as the steps run, so the host
    applies the stop rules to step i while the GPU runs step i + 1 and never waits for the host.

    On CUDA the copies go to pinned host memory without blocking, each followed by an event that :meth:`read`
    waits for; the step's next replay overwrites the device outputs only after the copy, in stream order. Read
    one step behind, a request runs at most one step past its end-of-text; checks every 8 steps (the earlier
    form) ran up to 7, ~20 ms at batch 1 on an H200, and drained the GPU at each check (under the profiler, ~0.7
    ms idle per check). A forced-length request is no faster either way: the loop is GPU-bound (H200, batch 1:
    291.5 / 291.2 / 291.4 ms reading 1, 4 or 99 steps behind; ``eval/results/h200``, session 14).
    """

    def __init__(self, batch: int, steps: int, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.tokens = torch.empty(steps, batch, dtype=torch.long, pin_memory=pinned)
        self.logprobs = torch.empty(steps, batch, dtype=torch.float32, pin_memory=pinned)
        self.events = [torch.cuda.Event() for _ in range(steps)] if pinned else None

    def push(self, index: int, tokens: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Queue the copy of step ``index``'s (B,) ``tokens`` and ``logprobs``."""
        self.tokens[index].copy_(tokens, non_blocking=True)
        self.logprobs[index].copy_(logprobs, non_blocking=True)
        if self.events is not None:
            self.events[index].record()

    def read(self, index: int) -> tuple[list[int], list[float]]:
        """Step ``index``'s tokens and log-probabilities, once copied."""
        if self.events is not None:
            self.events[index].synchronize()
        return self.tokens[index].tolist(), self.logprobs[index].tolist()
