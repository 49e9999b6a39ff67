"""The audio tower (encoder + projector) replayed from CUDA graphs at inference: the GPU fast path's front half.

Why: at batch 1 the released encoder's 24 Conformer blocks and the projector are about a thousand small
kernels; launched one by one from Python they take longer on the host than on the GPU (H100 profile, session
2: 7.5 ms of encoder kernels inside a 40 ms time to first token). One graph replay launches them all.

A graph has fixed shapes, so features are padded with zero frames to a multiple of :data:`FRAMES_STEP` and
masked by their lengths (:func:`~speechkit.model.encoder.pad_to_bucket`); every real token then comes out as
the eager tower gives it. Inputs longer than one attention window (:data:`ENCODER_WINDOW_TOKENS`) take the
eager path: padding would change how they are split into windows.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from speechkit.errors import ConfigError
from speechkit.model.audio_tower import AudioTower
from speechkit.model.config import ENCODER_WINDOW_TOKENS
from speechkit.model.encoder import EncoderOutput, pad_to_bucket

FRAMES_STEP = 256  # 2.56 s of features: a 30 s clip is one of 12 buckets


class _Graph:
    """One (rows, frames) bucket: its static inputs, its captured replay and the output it writes."""

    def __init__(self, tower: AudioTower, features: torch.Tensor, lengths: torch.Tensor, pool: tuple) -> None:
        self.features, self.lengths = features.clone(), lengths.clone()
        side = torch.cuda.Stream()  # kernel selection and workspaces before the capture, not inside it
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._run(tower)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.hidden = self._run(tower)

    def _run(self, tower: AudioTower) -> torch.Tensor:
        out = tower.encoder(self.features, self.lengths, lengths_on_host=False)  # no host sync inside a graph
        return tower.projector(out.hidden)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.features.copy_(features)
        self.lengths.copy_(lengths)
        self.graph.replay()
        return self.hidden


class AudioGraphs:
    """``tower(features, lengths)`` with each (batch size, padded length) captured once and replayed after.

    Graphs are kept least recently used first out beyond ``max_entries``; all share one memory pool (they
    replay one at a time and their outputs are copied out). ``use_graph=False`` runs the same padded inputs
    eagerly (the CPU path, and what the tests compare). Not thread-safe: one request at a time, as the
    server runs the model.
    """

    def __init__(self, tower: AudioTower, *, max_entries: int = 16, use_graph: bool | None = None) -> None:
        if max_entries < 1:
            raise ConfigError(f"AudioGraphs needs max_entries >= 1, got {max_entries}")
        self.tower, self.max_entries = tower, max_entries
        device = next(tower.parameters()).device
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        self.pool = torch.cuda.graph_pool_handle() if self.use_graph else None
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    @torch.inference_mode()
    def __call__(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """(B, T, n_mels) log-mel and (B,) valid frames (None: every row fills T) -> (B, ceil(T / 8), hidden)
        speech embeddings and (B,) token lengths on the host, as :class:`AudioTower` gives them."""
        rows, frames, _ = features.shape
        encoder = self.tower.encoder
        padded_frames = -(-frames // FRAMES_STEP) * FRAMES_STEP
        if encoder.token_lengths(torch.tensor(padded_frames)) > ENCODER_WINDOW_TOKENS:
            return self.tower(features, lengths)
        if lengths is None:
            lengths = torch.full((rows,), frames, dtype=torch.int64)
        padded, padded_lengths = pad_to_bucket(features, lengths, 1, FRAMES_STEP)
        if self.use_graph:
            hidden = self._graph(padded, padded_lengths)(padded, padded_lengths)
        else:
            hidden = self.tower.projector(encoder(padded, padded_lengths).hidden)
        tokens = -(-frames // encoder.config.time_reduction)
        return EncoderOutput(hidden[:, :tokens].clone(), encoder.token_lengths(lengths.cpu()))

    def _graph(self, features: torch.Tensor, lengths: torch.Tensor) -> _Graph:
        key = (*features.shape, features.dtype, features.device)
        graph = self._graphs.pop(key, None)
        if graph is None:
            while len(self._graphs) >= self.max_entries:
                self._graphs.popitem(last=False)
            graph = _Graph(self.tower, features, lengths, self.pool)
        self._graphs[key] = graph
        return graph
