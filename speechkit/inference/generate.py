"""Batched greedy decoding with a static KV cache over the speech model.

Prompts of unequal length are left-padded (positions from the mask, as in the official code),
so each row gets the tokens it would get alone (fp32). When the sequence crosses LongRoPE's
``original_max_position_embeddings``, the prefix is recomputed with the long factors, as the
official implementation does (keys cached under the short factors would be inconsistent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechkit.errors import ConfigError
from speechkit.inference.repetition import loop_start
from speechkit.model.decoder import position_ids_from_mask
from speechkit.model.encoder import EncoderOutput
from speechkit.model.speech_model import SpeechModel


@dataclass(frozen=True)
class Generation:
    """One decoded hypothesis.

    Attributes:
        tokens: generated ids, stop token excluded (and a detected loop cut to one copy).
        avg_logprob: mean log-probability of every sampled token (stop token and cut loop included).
        stop: ``stop`` (a stop id), ``length`` (max_new_tokens reached) or ``repetition``.
    """

    tokens: tuple[int, ...]
    avg_logprob: float
    stop: str


@dataclass
class Row:
    limit: int
    tokens: list[int]
    detect_loops: bool = True
    logprob: float = 0.0  # sum over every sampled token
    sampled: int = 0
    stop: str | None = None


@dataclass(frozen=True)
class LeftPadded:
    """A batch of prompts left-padded to one length, with room for the new tokens.

    Attributes:
        ids: (B, prompt_len + max_new) token ids, pad ids before each prompt and after it.
        mask: (B, prompt_len + max_new) 1 for real tokens (new-token slots count as real), 0 for padding.
        positions: (B, prompt_len + max_new) rotary positions (cumsum of the mask - 1, as the official code).
        prompt_len: the longest prompt's length.
        padded: whether any prompt is shorter than ``prompt_len``.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    prompt_len: int
    padded: bool

    @classmethod
    def build(cls, model: SpeechModel, prompts: list[list[int]], max_new_tokens: list[int], pad_id: int) -> LeftPadded:
        device = model.decoder.embed_tokens.weight.device
        prompt_len = max(len(p) for p in prompts)
        total = prompt_len + max(max_new_tokens)
        limit = model.decoder.config.rope.max_position_embeddings
        if total > limit:
            raise ConfigError(
                f"prompt of {prompt_len} tokens plus {max(max_new_tokens)} new tokens exceeds the model's "
                f"context of {limit} tokens; shorten the audio or lower --max-new-tokens"
            )
        ids = torch.full((len(prompts), total), pad_id, dtype=torch.long, device=device)
        mask = torch.ones(len(prompts), total, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, prompt_len - len(p) : prompt_len] = torch.tensor(p, device=device)
            mask[i, : prompt_len - len(p)] = 0
        padded = any(len(p) < prompt_len for p in prompts)
        return cls(ids, mask, position_ids_from_mask(mask), prompt_len, padded)


@torch.inference_mode()
def generate(
    model: SpeechModel,
    prompts: list[list[int]],
    audio: EncoderOutput | None,
    *,
    max_new_tokens: list[int],
    stop_ids: tuple[int, ...],
    pad_id: int,
    detect_loops: bool = True,
) -> list[Generation]:
    """Greedy-decode a batch of prompts whose audio tokens take ``audio``'s clips in order.

    Args:
        prompts: token ids per row (audio placeholders already expanded).
        audio: speech embeddings, one clip per audio placeholder run, or None for text-only.
        max_new_tokens: per-row cap on generated tokens (stop token included).
        stop_ids: generation ends at any of these.
        pad_id: id used to left-pad shorter prompts (masked out, never attended).
        detect_loops: cut and flag runaway repetition (off only to force output lengths in benchmarks).
    """
    decoder = model.decoder
    batch = LeftPadded.build(model, prompts, max_new_tokens, pad_id)
    ids, mask, positions, prompt_len = batch.ids, batch.mask, batch.positions, batch.prompt_len
    device = ids.device
    stops = torch.tensor(stop_ids, device=device)
    rows = [Row(n, [], detect_loops) for n in max_new_tokens]
    cache = decoder.allocate_cache(len(prompts), ids.shape[1])
    padded = batch.padded
    length = prompt_len  # tokens in the cache after the next forward
    regime = decoder.regime_for(length)
    hidden = decoder(model.embed_inputs(ids[:, :length], audio), positions[:, :length], cache=cache,
                     attention_mask=mask[:, :length] if padded else None, regime=regime, prefill=True)  # fmt: skip
    while True:
        logprobs = torch.log_softmax(decoder.logits(hidden[:, -1]).float(), dim=-1)
        best, token = logprobs.max(dim=-1)
        advance(rows, token.tolist(), best.tolist(), torch.isin(token, stops).tolist())
        if all(r.stop is not None for r in rows):
            break
        ids[:, length] = token
        length += 1
        if decoder.regime_for(length) != regime:
            # crossing into the long RoPE regime: recompute the whole prefix under it
            regime = decoder.regime_for(length)
            embeds = model.embed_inputs(ids[:, :length], audio)
            prefix_mask = mask[:, :length] if padded else None
            hidden = decoder(embeds, positions[:, :length], cache=cache, attention_mask=prefix_mask, regime=regime,
                             prefill=True)  # fmt: skip
            continue
        slot = torch.tensor([length - 1], device=device)
        hidden = decoder(decoder.embed(ids[:, length - 1 : length]), positions[:, length - 1 : length], cache=cache,
                         cache_position=slot, attention_mask=mask, regime=regime)  # fmt: skip
    return [Generation(tuple(r.tokens), r.logprob / r.sampled, r.stop) for r in rows]


def advance(rows: list[Row], tokens: list[int], logprobs: list[float], is_stop: list[bool]) -> None:
    for row, token, logprob, stop in zip(rows, tokens, logprobs, is_stop, strict=True):
        if row.stop is not None:
            continue
        row.logprob += logprob
        row.sampled += 1
        if stop:
            row.stop = "stop"
            continue
        row.tokens.append(token)
        loop = loop_start(row.tokens) if row.detect_loops else None
        if loop is not None:
            start, period = loop
            del row.tokens[start + period :]
            row.stop = "repetition"
        elif len(row.tokens) >= row.limit:
            row.stop = "length"
