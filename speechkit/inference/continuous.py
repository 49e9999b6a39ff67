"""Continuous batching: a fixed number of decoding rows, each refilled with the next request as soon as its
own request stops, so that short outputs do not wait for the longest one in their batch.

The rows share one captured decode step (:class:`~speechkit.inference.fast_generate.DecodeStep` with
``ring=True``) whose cache slots form a ring: every step writes all rows at the same slot, which wraps
around; each row attends only to the slots of its own request (a boolean record per row, updated inside
the step). A joining request is prefilled alone (a batch-1 prefill, from a CUDA graph per 64-token length on
the GPU) and its keys and values are copied into its row, in the slots just before the next write. Keys carry
their rotary positions, so where they sit in the ring does not change the attention result; each request
decodes as it would alone (fp32: the same tokens; the order of the attention sums differs).

Stop rules are applied on the host every ``SYNC_EVERY`` steps; a row whose request stopped inside that
window runs idle until the sync, then takes the next request. A request must fit in the
ring: prompt + new tokens <= its capacity (the longest request, rounded up to ``CAPACITY_BUCKET``).
Requests whose length leaves LongRoPE's short regime are decoded one by one by ``generate_fast``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from speechkit.errors import ConfigError
from speechkit.inference import fast_generate
from speechkit.inference.fast_generate import CAPACITY_BUCKET, DecodeStep, generate_fast, greedy_pick
from speechkit.inference.generate import Generation, Row, advance
from speechkit.model.encoder import EncoderOutput
from speechkit.model.speech_model import SpeechModel

SYNC_EVERY = 8  # decode steps between host checks of the stop rules (and admissions of waiting requests)


@torch.inference_mode()
def generate_continuous(
    model: SpeechModel,
    prompts: list[list[int]],
    audio: EncoderOutput | Sequence[EncoderOutput | None] | None,
    *,
    max_new_tokens: list[int],
    stop_ids: tuple[int, ...],
    width: int,
    detect_loops: bool = True,
    use_graph: bool | None = None,
    compile_layers: bool | None = None,
) -> list[Generation]:
    """Greedy-decode every prompt, ``width`` at a time with continuous refilling; results in input order.

    Args:
        prompts: token ids per request (audio placeholders expanded).
        audio: one clip per request: a batch (``audio.hidden[i, :audio.lengths[i]]`` fills request i's audio
            tokens), a list of one-clip outputs (None for a text-only request), or None (text only).
        max_new_tokens, stop_ids, detect_loops: as :func:`~speechkit.inference.generate.generate`.
        width: decoding rows (the batch size of the decode step).
        use_graph, compile_layers: as :func:`~speechkit.inference.fast_generate.generate_fast`.
    """
    if width < 1:
        raise ConfigError(f"continuous batching needs width >= 1, got {width}")
    decoder = model.decoder
    device = decoder.embed_tokens.weight.device
    use_graph = device.type == "cuda" if use_graph is None else use_graph
    if compile_layers is None:
        compile_layers = device.type == "cuda" and fast_generate.triton_available()
    if isinstance(audio, EncoderOutput):
        clips = split_clips(audio)
    else:
        clips = [None] * len(prompts) if audio is None else list(audio)
    results: list[Generation | None] = [None] * len(prompts)
    ring_requests = []
    for i, (prompt, new) in enumerate(zip(prompts, max_new_tokens, strict=True)):
        if decoder.regime_for(len(prompt) + new) == "short":
            ring_requests.append(i)
        else:  # beyond the short regime (or crossing into the long one): alone, as generate_fast decodes it
            (results[i],) = generate_fast(model, [prompt], clips[i], max_new_tokens=[new], stop_ids=stop_ids,
                                          pad_id=0, detect_loops=detect_loops, use_graph=use_graph,
                                          compile_layers=compile_layers)  # fmt: skip
    if not ring_requests:
        return results  # type: ignore[return-value]

    longest = max(len(prompts[i]) + max_new_tokens[i] for i in ring_requests)
    capacity = -(-longest // CAPACITY_BUCKET) * CAPACITY_BUCKET
    rows = min(width, len(ring_requests))
    ring = DecodeStep(model, decoder.allocate_cache(rows, capacity),
                      torch.zeros(rows, capacity, dtype=torch.bool, device=device), "short", use_graph,
                      compile_layers, ring=True)  # fmt: skip
    # the prompts' prefills: a batch-1 step's (its own decode graph is never replayed)
    scratch = DecodeStep(model, decoder.allocate_cache(1, capacity),
                         torch.ones(1, capacity, dtype=torch.long, device=device), "short", use_graph)  # fmt: skip
    stops = torch.tensor(stop_ids, device=device, dtype=torch.long)
    waiting = deque(ring_requests)
    serving: list[int | None] = [None] * rows  # the request each row decodes
    decoded: dict[int, Row] = {}
    first: dict[int, tuple[int, float]] = {}  # row -> its request's first token and log-prob (from the prefill)

    def admit(row: int) -> None:
        i = waiting.popleft()
        prompt = prompts[i]
        ids = torch.tensor([prompt], device=device)
        embeds = model.embed_inputs(ids, clips[i])
        positions = torch.arange(len(prompt), device=device)[None]
        last = scratch.prefill(embeds, positions, None)
        logprob, token = greedy_pick(decoder.logits(last).float())
        ring.admit(row, scratch.cache, len(prompt), token)
        serving[row], decoded[i] = i, Row(max_new_tokens[i], [], detect_loops)
        first[row] = (int(token), float(logprob))

    for row in range(rows):
        admit(row)
    while any(i is not None for i in serving):
        tokens, logprobs = [], []
        for _ in range(SYNC_EVERY):
            ring()
            tokens.append(ring.best.clone())
            logprobs.append(ring.logprob.clone())
        stacked = torch.stack(tokens)  # (SYNC_EVERY, rows)
        steps, step_stops = stacked.tolist(), torch.isin(stacked, stops).tolist()
        step_logprobs = torch.stack(logprobs).tolist()
        for row, i in enumerate(serving):
            if i is None:
                continue
            request = decoded[i]
            head = first.pop(row, None)
            sequence = ([(head[0], head[1], head[0] in stop_ids)] if head else []) + [
                (step[row], lp[row], st[row]) for step, lp, st in zip(steps, step_logprobs, step_stops, strict=True)
            ]
            for token, logprob, is_stop in sequence:
                advance([request], [token], [logprob], [is_stop])
                if request.stop is not None:
                    break
            if request.stop is not None:
                results[i] = Generation(tuple(request.tokens), request.logprob / request.sampled, request.stop)
                serving[row] = None
                if waiting:
                    admit(row)
    return results  # type: ignore[return-value]


def split_clips(audio: EncoderOutput) -> list[EncoderOutput]:
    """A batch's clips as one-clip :class:`EncoderOutput` s (views of its tensors)."""
    return [EncoderOutput(audio.hidden[i : i + 1], audio.lengths[i : i + 1]) for i in range(len(audio.lengths))]
