"""Encoder outputs of the training audio, computed once for stages that keep the encoder frozen.

A stage that trains only the projector, decoder or LoRA would otherwise run the encoder forward on every
step for the same result. The cache holds each utterance's (T', encoder_dim) output on the training
device, in bf16 under bf16 training (107 h of audio at 80 ms a token and 256 dims: about 2.5 GB), as the
rows of one flat tensor; a batch addresses them by row index (:meth:`EncoderCache.sources`), so fetching
a batch's outputs is one gather on the device, inside a captured CUDA graph too. Its audio is the training
batches' (edge silence included); it is computed in eval mode without SpecAugment, so a resumed run
rebuilds it bit for bit. ``cached_embeds`` turns a batch's fetched outputs into decoder input, and
``audio_time_keep`` masks them at random, the augmentation a cache built once still allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechkit.audio import SAMPLE_RATE, LogMelFrontend
from speechkit.errors import DataError
from speechkit.model.speech_model import SpeechModel
from speechkit.training.batches import (
    AudioStore,
    EdgeSilence,
    Row,
    padded_waves,
    plan_batches,
    training_waves,
    worker_init,
)

# padded audio seconds per encoder pass while building the cache: the pass is host-bound (run 11: 48 s for
# 70k clips at 600 s a pass), so fewer, larger passes
ENCODE_SECONDS = 3000.0


class EncoderCache:
    """The encoder's output for every row (by id): ``length(id)`` audio tokens; ``sources`` addresses them
    from a batch's prompts, ``rows`` fetches them. The last row is zeros (``pad_index``), the source of
    every position that is not audio."""

    def __init__(self, model: SpeechModel, rows: Sequence[Row], store: AudioStore | None, device: torch.device,
                 precision: str = "bf16", edge_silence: EdgeSilence | None = None,
                 workers: int = 0) -> None:  # fmt: skip
        frontend = LogMelFrontend(device)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        encoder = model.audio.encoder
        was_training = encoder.training
        encoder.eval()
        parts: list[torch.Tensor] = []
        self._where: dict[str, tuple[int, int]] = {}
        offset = 0
        plan = sorted(plan_batches([r.duration for r in rows], ENCODE_SECONDS, 0, 0), key=lambda b: rows[b[0]].duration)
        # the padded waveforms of each pass are built by ``workers`` processes, in page-locked memory on a GPU,
        # while the device encodes the passes before: built here, one after another, they were most of run
        # 16's 32 s (3,000 s of audio a pass: ~0.2 GB of float32 converted, silence-padded and copied twice)
        loader = torch.utils.data.DataLoader(
            _PassWaves(rows, plan, store, edge_silence), batch_size=None, num_workers=workers,
            pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None, worker_init_fn=worker_init,
            generator=torch.Generator().manual_seed(0),  # not the global one: a resumed run draws the same masks
        )  # fmt: skip
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            for batch, (waves, lengths) in zip(plan, loader, strict=True):
                # one batched front-end pass: per-clip calls cost ~a dozen kernels each (run 9: 56 s for 70k clips)
                feats = frontend.padded(waves.to(device, non_blocking=True), lengths)
                out = encoder(feats.values, feats.lengths.to(device))
                # every row's valid tokens in one gather, row after row (a slice per clip: 70k launches)
                valid = torch.arange(out.hidden.shape[1])[None, :] < out.lengths[:, None]
                parts.append(out.hidden[valid.to(device)].to(dtype))
                for i, n in zip(batch, out.lengths.tolist(), strict=True):
                    self._where[rows[i].id] = (offset, n)
                    offset += n
        encoder.train(was_training)
        parts.append(parts[-1].new_zeros(1, parts[-1].shape[1]))
        self.flat = torch.cat(parts)  # (audio tokens of all rows + 1, encoder_dim)
        self.pad_index = offset

    def length(self, row_id: str) -> int:
        """Audio tokens of ``row_id``."""
        return self._where[row_id][1]

    def sources(self, row_ids: Sequence[str], input_ids: torch.Tensor, audio_token: int) -> torch.Tensor:
        """(B, L) int64: for each audio-token position of ``input_ids`` (B, L), the cache row of its
        encoder output (row i's audio positions, in order, get row ``row_ids[i]``'s tokens); ``pad_index``
        elsewhere. Raises if a prompt's audio-token count is not its row's."""
        audio = input_ids == audio_token
        counts = audio.sum(dim=1)
        starts = torch.tensor([self._where[i][0] for i in row_ids], dtype=torch.int64)
        expected = torch.tensor([self._where[i][1] for i in row_ids], dtype=torch.int64)
        if not torch.equal(counts, expected):
            bad = int((counts != expected).nonzero()[0])
            raise DataError(f"{row_ids[bad]}: the prompt has {int(counts[bad])} audio tokens, the cache "
                            f"{int(expected[bad])}")  # fmt: skip
        within = audio.cumsum(dim=1) - 1
        return torch.where(audio, starts[:, None] + within, torch.full_like(input_ids, self.pad_index))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The cached outputs at ``index`` (any shape, on the cache's device): (*index.shape, encoder_dim)."""
        return self.flat[index]


class _PassWaves(torch.utils.data.Dataset):
    """Item i: the right-padded float32 waveforms and valid lengths of the cache's i-th encoder pass."""

    def __init__(self, rows: Sequence[Row], plan: list[list[int]], store: AudioStore | None,
                 edge_silence: EdgeSilence | None) -> None:  # fmt: skip
        self.rows, self.plan, self.store, self.edge_silence = rows, plan, store, edge_silence

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        waves = training_waves([self.rows[j] for j in self.plan[i]], self.store, self.edge_silence)
        odd = [w.source for w in waves if w.sample_rate != SAMPLE_RATE]
        if odd:
            raise DataError(f"{odd[0]}: caching encoder outputs needs {SAMPLE_RATE} Hz training audio")
        return padded_waves(waves)


def cached_embeds(model: SpeechModel, input_ids: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """:meth:`SpeechModel.embed_inputs` for cached encoder outputs already placed at their positions:
    ``encoded`` (B, L, encoder_dim) holds each audio position's encoder output (anything elsewhere).
    The projector runs on every position (it is position-wise) and the audio positions take its output."""
    tokens = model.decoder.embed(input_ids)
    audio = model.audio.projector(encoded).to(tokens.dtype)
    return torch.where((input_ids == model.audio_token_id).unsqueeze(-1), audio, tokens)


def audio_time_keep(audio: torch.Tensor, masks: int, width: int) -> torch.Tensor:
    """(B, L) bool, False at ``masks`` spans of up to ``width`` consecutive audio positions of each row.

    ``audio`` (B, L) bool marks a row's audio positions (one clip per row). Span widths are uniform in
    [0, width] and starts uniform over the clip, drawn on the device's default generator without a host
    synchronisation (a CUDA graph replays fresh draws).
    """
    index = audio.cumsum(dim=1) - 1  # position of each audio token inside its clip
    count = audio.sum(dim=1, keepdim=True)  # (B, 1)
    shape = (audio.shape[0], masks)
    widths = (torch.rand(shape, device=audio.device) * (width + 1)).floor()
    starts = (torch.rand(shape, device=audio.device) * count).floor()
    inside = (index[:, None, :] >= starts[..., None]) & (index[:, None, :] < (starts + widths)[..., None])
    return ~(inside.any(dim=1) & audio)
