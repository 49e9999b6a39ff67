"""Training steps replayed from CUDA graphs: whole steps (forward, backward, clipping, AdamW) for stages that
train on cached encoder outputs (:class:`GraphedSteps`), and the encoder's forward and backward for stages
that train it (:class:`GraphedEncoder`).

Why: the demo's cached asr step costs ~19 ms of host time (about 450 kernel launches through Python) around
~2.3 ms of GPU work on an H100 (session 5, ``eval/bench/train_loop_profile.py``); a graph replays the same
kernels with one launch. A graph has fixed shapes and addresses, so a batch is padded up to a bucket
(rows to a multiple of :data:`ROWS_STEP`, tokens to a multiple of :data:`TOKENS_STEP`) and copied into that
bucket's input buffers; each bucket is captured the first time it is seen. Padding rows carry no labels
and padding tokens come after a row's last token, so the loss and its gradient are those of the batch
(the decoder's attention is causal; cross-entropy averages over labelled tokens only).

The step must not synchronise with the host, so the optimizer is AdamW with ``capturable=True`` and its
learning rate is a device tensor (:func:`speechkit.training.optim.build_optimizer`), and loss and
gradient norm come back as device tensors, valid until the next step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from speechkit.model.encoder import AudioEncoder, EncoderOutput, pad_to_bucket
from speechkit.training.batches import IGNORE, Batch

ROWS_STEP = 16
TOKENS_STEP = 32
# encoder stages: a step is host-bound whatever its size, so coarse buckets (fewer captures, more padding)
ENCODER_ROWS_STEP = 32
ENCODER_FRAMES_STEP = 256


@dataclass
class _Bucket:
    graph: torch.cuda.CUDAGraph
    static: Batch  # the inputs the graph reads: input_ids, labels, audio_source (rows, tokens) on the device
    loss: Tensor  # 0-dim outputs the graph writes
    grad_norm: Tensor


class GraphedSteps:
    """Training steps of one stage on cached encoder outputs, one CUDA graph per padded batch shape.

    ``loss_fn(batch)`` is the stage's loss of a device batch (it must read only ``input_ids``, ``labels``
    and ``audio_source``); ``optimizer`` must be capturable with a tensor learning rate; ``pad_index`` is
    the cache row of zeros (``EncoderCache.pad_index``).
    """

    def __init__(self, loss_fn: Callable[[Batch], Tensor], params: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer, grad_clip: float, pad_index: int) -> None:  # fmt: skip
        if not optimizer.defaults.get("capturable"):
            raise ValueError("GraphedSteps needs an optimizer built with capturable=True")
        self.loss_fn, self.params, self.optimizer = loss_fn, params, optimizer
        self.grad_clip, self.pad_index = grad_clip, pad_index
        self.device = params[0].device
        self.pool = torch.cuda.graph_pool_handle()  # one pool: buckets replay one at a time
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        _init_adamw_state(optimizer)

    def __call__(self, batch: Batch, lr: float) -> tuple[Tensor, Tensor]:
        """One optimizer step on ``batch`` (on the host, ideally pinned) at learning rate ``lr``; returns
        the loss and the gradient norm before clipping (device tensors, overwritten by the next step)."""
        key = cached_bucket(*batch.input_ids.shape)
        for group in self.optimizer.param_groups:
            group["lr"].fill_(lr)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = self._capture(key, batch)
        else:
            fill_bucket(bucket.static, batch, self.pad_index)
        bucket.graph.replay()
        return bucket.loss, bucket.grad_norm

    def _capture(self, key: tuple[int, int], batch: Batch) -> _Bucket:
        def empty() -> Tensor:
            return torch.empty(key, dtype=torch.int64, device=self.device)

        static = Batch(empty(), empty(), None, None, pad_id=batch.pad_id, audio_source=empty())
        bucket = _Bucket(torch.cuda.CUDAGraph(), static, torch.empty(()), torch.empty(()))
        fill_bucket(static, batch, self.pad_index)
        # lazy initialisation (kernel selection, workspaces) must not happen inside the capture: run the
        # forward and backward once at this shape on a side stream first, without an optimizer step
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.loss_fn(static).backward()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(bucket.graph, pool=self.pool):
            bucket.loss = self.loss_fn(static)
            bucket.loss.backward()
            bucket.grad_norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # the captured gradients live in the graph's pool
        return bucket


def cached_bucket(rows: int, tokens: int) -> tuple[int, int]:
    """The padded (rows, tokens) shape a cached-stage batch of this shape is replayed at."""
    return -(-rows // ROWS_STEP) * ROWS_STEP, -(-tokens // TOKENS_STEP) * TOKENS_STEP


def fill_bucket(static: Batch, batch: Batch, pad_index: int) -> None:
    """Copy a cached-stage ``batch`` into the larger ``static`` batch of its bucket, in place: the padding
    tokens (after each row's own) and rows get the pad id, no label, and the cache's zero row (``pad_index``)."""
    rows, tokens = batch.input_ids.shape
    for target, value, fill in ((static.input_ids, batch.input_ids, batch.pad_id),
                                (static.labels, batch.labels, IGNORE),
                                (static.audio_source, batch.audio_source, pad_index)):  # fmt: skip
        target.fill_(fill)
        target[:rows, :tokens].copy_(value, non_blocking=True)


def _init_adamw_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's per-parameter state (as its first step would) before any capture, so that it lives
    outside the graphs' memory pool; a resumed run's state is kept."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if not optimizer.state.get(param):
                optimizer.state[param] = {
                    "step": torch.zeros((), dtype=torch.float32, device=param.device),
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }


class _EncoderBucket:
    """One padded shape's encoder forward and backward graphs and the static tensors they read and write.

    Captured with ``capture_error_mode="thread_local"``: the DataLoader's pin-memory thread allocates
    page-locked memory while we capture, which the default global mode counts as an error of the capture
    (``torch.cuda.make_graphed_callables`` offers no other mode; session 7's first GPU run failed so).
    """

    def __init__(self, encoder: AudioEncoder, features: Tensor, lengths: Tensor, pool: tuple[int, int]) -> None:
        self.params = [p for p in encoder.parameters() if p.requires_grad]
        self.features, self.lengths = features.clone(), lengths.clone()
        # lazy initialisation (kernel selection, workspaces) must not happen inside a capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            hidden = self._hidden(encoder)
            torch.autograd.grad(hidden, self.params, torch.ones_like(hidden), allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        del hidden
        self.forward, self.backward = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward, pool=pool, capture_error_mode="thread_local"):
            hidden = self._hidden(encoder)
        self.grad_hidden = torch.empty_like(hidden)
        with torch.cuda.graph(self.backward, pool=pool, capture_error_mode="thread_local"):
            grads = torch.autograd.grad(hidden, self.params, self.grad_hidden, allow_unused=True)
        self.hidden = hidden.detach()
        self.grads = tuple(None if g is None else g.detach() for g in grads)

    def _hidden(self, encoder: AudioEncoder) -> Tensor:
        # token lengths stay on the device: a graph cannot synchronise
        return encoder(self.features, self.lengths, lengths_on_host=False).hidden


class _ReplayEncoder(torch.autograd.Function):
    """Autograd's view of a bucket: forward replays its forward graph, backward its backward graph, whose
    parameter gradients autograd then accumulates into ``.grad`` as for an eager encoder."""

    @staticmethod
    def forward(ctx: Any, bucket: _EncoderBucket, features: Tensor, lengths: Tensor, *params: Tensor) -> Tensor:
        ctx.bucket = bucket
        bucket.features.copy_(features)
        bucket.lengths.copy_(lengths)
        bucket.forward.replay()
        return bucket.hidden.detach()  # a new tensor object each call: autograd attaches to it

    @staticmethod
    def backward(ctx: Any, grad_hidden: Tensor) -> tuple[Tensor | None, ...]:
        bucket = ctx.bucket
        bucket.grad_hidden.copy_(grad_hidden)
        bucket.backward.replay()
        return (None, None, None, *(None if g is None else g.detach() for g in bucket.grads))


class GraphedEncoder:
    """``encoder(features, lengths)`` for a stage that trains the encoder, its forward and backward replayed
    from CUDA graphs, one pair per padded batch shape (rows to a multiple of :data:`ENCODER_ROWS_STEP`,
    frames to :data:`ENCODER_FRAMES_STEP`).

    Why: the demo's CTC step is ~69 ms of host time (kernel launches of the Conformer, forward and backward)
    whatever the batch (session 5). What surrounds the encoder stays eager: the front end, SpecAugment,
    the CTC head and loss (whose lengths live on the host), clipping and AdamW. Padding rows are full-length
    zeros whose outputs are dropped; padding frames lie beyond every row's length, which the encoder masks,
    so the real rows' outputs are those of the batch alone. Call it inside the stage's autocast with
    ``cache_enabled=False`` (captures and replays must see the same casts).
    """

    def __init__(self, encoder: AudioEncoder) -> None:
        self.encoder = encoder
        self.device = next(encoder.parameters()).device
        self.pool = torch.cuda.graph_pool_handle()  # a step replays one bucket's forward, then its backward
        self.buckets: dict[tuple[int, int], _EncoderBucket] = {}

    def __call__(self, features: Tensor, lengths: Tensor) -> EncoderOutput:
        """Encode (B, T, n_mels) ``features`` with (B,) valid frames ``lengths``: as the encoder does, with
        gradients; the token lengths come back on the host."""
        padded, padded_lengths = pad_to_bucket(features, lengths, ENCODER_ROWS_STEP, ENCODER_FRAMES_STEP)
        key = tuple(padded.shape[:2])
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _EncoderBucket(self.encoder, padded, padded_lengths, self.pool)
        hidden = _ReplayEncoder.apply(bucket, padded, padded_lengths, *bucket.params)
        return unpadded(self.encoder, hidden, features.shape, lengths)


def unpadded(encoder: AudioEncoder, hidden: Tensor, shape: torch.Size, lengths: Tensor) -> EncoderOutput:
    """The encoder output of the batch of ``shape`` (B, T, n_mels) and ``lengths`` inside ``hidden``, the
    output of its padded batch (:func:`~speechkit.model.encoder.pad_to_bucket`); token lengths on the host,
    as the encoder gives them."""
    rows, frames, _ = shape
    tokens = -(-frames // encoder.config.time_reduction)
    return EncoderOutput(hidden[:rows, :tokens], encoder.token_lengths(lengths.cpu().long()))
