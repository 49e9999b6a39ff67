"""Beam search over the speech model: ``beam_size`` hypotheses per clip, in one batch of clips x beams.

Each step extends every live hypothesis by its best tokens and keeps the ``beam_size`` best extensions per clip
by total log-probability; an extension ending in a stop token, a runaway repetition (cut to one copy, as the
greedy path does) or the clip's token cap is set aside as finished. A clip is done when it has ``beam_size``
finished hypotheses and no live one has a better mean log-probability per token; the finished hypothesis with
the best mean wins (``Generation.avg_logprob``: the stop token counts, as in greedy decoding). With
``beam_size`` 1 this is greedy decoding, token for token.

The KV cache holds clips x beams rows; after each step the rows are gathered into the order of the kept
hypotheses (a hypothesis only ever continues one of its own clip's rows, so each row keeps its clip's padding
mask). On the plain decoder: the CUDA-graph step of ``fast_generate`` decodes greedily only.
"""

from __future__ import annotations

import torch

from speechkit.errors import ConfigError
from speechkit.inference.generate import Generation, LeftPadded
from speechkit.inference.repetition import loop_start
from speechkit.model.encoder import EncoderOutput
from speechkit.model.kv_cache import KVCache
from speechkit.model.speech_model import SpeechModel


class _Clip:
    """One clip's search: its rows' tokens and scores, and the finished hypotheses."""

    def __init__(self, beams: int, cap: int) -> None:
        self.cap = cap
        self.tokens: list[list[int]] = [[] for _ in range(beams)]
        self.scores = [0.0] + [float("-inf")] * (beams - 1)  # step one extends the first row only
        self.finished: list[tuple[float, tuple[int, ...], str]] = []  # (mean log-prob, tokens, stop)
        self.done = False

    def extend(self, candidates: list[tuple[float, int, int]], stops: set[int], detect_loops: bool,
               beams: int) -> list[tuple[int, int]]:  # fmt: skip
        """Keep the best ``beams`` live extensions of ``candidates`` ((score, beam, token), best first); returns
        (source beam, token) per kept row. Only the first ``beams`` candidates may finish (a stop, a loop, the
        cap): a lower-ranked ending is dropped, so that width 1 is greedy decoding."""
        kept: list[tuple[int, int]] = []
        scores, tokens = [], []
        for rank, (score, beam, token) in enumerate(candidates):
            if score == float("-inf") or (len(kept) == beams and rank >= beams):
                break
            sampled = len(self.tokens[beam]) + 1
            if token in stops:
                if rank < beams:
                    self.finished.append((score / sampled, tuple(self.tokens[beam]), "stop"))
                continue
            seq = [*self.tokens[beam], token]
            loop = loop_start(seq) if detect_loops else None
            if loop is not None or sampled >= self.cap:
                if rank < beams:  # a loop is cut to one copy, as greedy decoding does
                    end, stop = (len(seq), "length") if loop is None else (loop[0] + loop[1], "repetition")
                    self.finished.append((score / sampled, tuple(seq[:end]), stop))
            elif len(kept) < beams:
                kept.append((beam, token))
                scores.append(score)
                tokens.append(seq)
        live = [s / len(t) for s, t in zip(scores, tokens, strict=True)]
        best_finished = sorted((f[0] for f in self.finished), reverse=True)
        self.done = not kept or (len(best_finished) >= beams and max(live) <= best_finished[beams - 1])
        while len(kept) < beams:  # rows without a live hypothesis: a copy of the first, never chosen again
            kept.append(kept[0] if kept else (0, 0))
            scores.append(float("-inf"))
            tokens.append(list(tokens[0]) if tokens else [])
        self.scores, self.tokens = scores, tokens
        return kept

    def best(self) -> Generation:
        mean, tokens, stop = max(self.finished, key=lambda f: f[0])
        return Generation(tokens, mean, stop)


def _gather_rows(cache: KVCache, ids: torch.Tensor, source: torch.Tensor) -> None:
    """Rows of the cache and of ``ids`` reordered in place: row r takes row ``source[r]``."""
    for buffer in (*cache.keys, *cache.values, ids):
        buffer.copy_(buffer.index_select(0, source))


@torch.inference_mode()
def beam_search(
    model: SpeechModel,
    prompts: list[list[int]],
    audio: EncoderOutput | None,
    *,
    beam_size: int,
    max_new_tokens: list[int],
    stop_ids: tuple[int, ...],
    pad_id: int,
    detect_loops: bool = True,
) -> list[Generation]:
    """Beam-search a batch of prompts, each with one audio clip of ``audio`` (in order) or none.

    Arguments as :func:`speechkit.inference.generate.generate`; ``beam_size`` hypotheses per clip (the
    cache holds len(prompts) x beam_size rows).
    """
    if beam_size < 1:
        raise ConfigError(f"beam_size={beam_size} must be >= 1")
    decoder, beams = model.decoder, beam_size
    clips = [_Clip(beams, cap) for cap in max_new_tokens]
    rows = [p for p in prompts for _ in range(beams)]
    if audio is not None:
        audio = EncoderOutput(audio.hidden.repeat_interleave(beams, 0), audio.lengths.repeat_interleave(beams, 0))
    batch = LeftPadded.build(model, rows, [cap for cap in max_new_tokens for _ in range(beams)], pad_id)
    ids, mask, positions, length = batch.ids, batch.mask, batch.positions, batch.prompt_len
    device = ids.device
    cache = decoder.allocate_cache(len(rows), ids.shape[1])
    regime = decoder.regime_for(length)
    prefix_mask = mask[:, :length] if batch.padded else None
    hidden = decoder(model.embed_inputs(ids[:, :length], audio), positions[:, :length], cache=cache,
                     attention_mask=prefix_mask, regime=regime, prefill=True)  # fmt: skip
    stops = set(stop_ids)
    width = beams * (1 + len(stops))  # enough candidates for ``beams`` that do not stop
    while True:
        logprobs = torch.log_softmax(decoder.logits(hidden[:, -1]).float(), dim=-1)  # (clips x beams, vocab)
        vocab = logprobs.shape[-1]
        base = torch.tensor([s for c in clips for s in c.scores], device=device, dtype=torch.float64)
        totals = (base[:, None] + logprobs.double()).view(len(clips), beams * vocab)
        top_scores, top_index = totals.topk(min(width, beams * vocab), dim=-1)
        source, next_tokens = [], []
        for i, (clip, scores, index) in enumerate(zip(clips, top_scores.tolist(), top_index.tolist(), strict=True)):
            if clip.done:
                kept = [(b, pad_id) for b in range(beams)]
            else:
                kept = clip.extend([(s, j // vocab, j % vocab) for s, j in zip(scores, index, strict=True)],
                                   stops, detect_loops, beams)  # fmt: skip
            source += [i * beams + b for b, _ in kept]
            next_tokens += [t for _, t in kept]
        if all(c.done for c in clips):
            break
        _gather_rows(cache, ids, torch.tensor(source, device=device))
        ids[:, length] = torch.tensor(next_tokens, device=device)
        length += 1
        if decoder.regime_for(length) != regime:
            # crossing into the long RoPE regime: recompute the whole prefix under it, as greedy decoding does
            regime = decoder.regime_for(length)
            prefix_mask = mask[:, :length] if batch.padded else None
            hidden = decoder(model.embed_inputs(ids[:, :length], audio), positions[:, :length], cache=cache,
                             attention_mask=prefix_mask, regime=regime, prefill=True)  # fmt: skip
            continue
        slot = torch.tensor([length - 1], device=device)
        hidden = decoder(decoder.embed(ids[:, length - 1 : length]), positions[:, length - 1 : length], cache=cache,
                         cache_position=slot, attention_mask=mask, regime=regime)  # fmt: skip
    return [clip.best() for clip in clips]
