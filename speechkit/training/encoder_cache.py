"""Encoder outputs of the training audio, computed once for stages that keep the encoder frozen.

A stage that trains only the projector, decoder or LoRA would otherwise run the encoder forward on every
step for the same result. The cache holds each utterance's (T', encoder_dim) output on the training
device, in bf16 under bf16 training (107 h of audio at 80 ms a token and 256 dims: about 2.5 GB), and
pads a batch's outputs on request. Its audio is the training batches' (edge silence included); it is
computed in eval mode without SpecAugment, so a resumed run rebuilds it bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechkit.audio import SAMPLE_RATE, LogMelFrontend
from speechkit.errors import DataError
from speechkit.model.encoder import EncoderOutput
from speechkit.model.speech_model import SpeechModel
from speechkit.training.batches import AudioStore, EdgeSilence, Row, padded_waves, plan_batches, training_waves

ENCODE_SECONDS = 600.0  # padded audio seconds per encoder pass while building the cache


class EncoderCache:
    """The encoder's output for every row (by id): ``length(id)`` audio tokens, ``gather(ids)`` pads them."""

    def __init__(self, model: SpeechModel, rows: Sequence[Row], store: AudioStore | None, device: torch.device,
                 precision: str = "bf16", edge_silence: EdgeSilence | None = None) -> None:  # fmt: skip
        frontend = LogMelFrontend(device)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        encoder = model.audio.encoder
        was_training = encoder.training
        encoder.eval()
        parts: list[torch.Tensor] = []
        self._where: dict[str, tuple[int, int]] = {}
        offset = 0
        plan = sorted(plan_batches([r.duration for r in rows], ENCODE_SECONDS, 0, 0), key=lambda b: rows[b[0]].duration)
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            for batch in plan:
                waves = training_waves([rows[i] for i in batch], store, edge_silence)
                odd = [w.source for w in waves if w.sample_rate != SAMPLE_RATE]
                if odd:
                    raise DataError(f"{odd[0]}: caching encoder outputs needs {SAMPLE_RATE} Hz training audio")
                # one batched front-end pass: per-clip calls cost ~a dozen kernels each (run 9: 56 s for 70k clips)
                feats = frontend.padded(*padded_waves(waves))
                out = encoder(feats.values, feats.lengths.to(device))
                for j, (i, n) in enumerate(zip(batch, out.lengths.tolist(), strict=True)):
                    parts.append(out.hidden[j, :n].to(dtype))
                    self._where[rows[i].id] = (offset, n)
                    offset += n
        encoder.train(was_training)
        self._flat = torch.cat(parts)

    def length(self, row_id: str) -> int:
        """Audio tokens of ``row_id``."""
        return self._where[row_id][1]

    def gather(self, row_ids: Sequence[str]) -> EncoderOutput:
        """The rows' outputs right-padded with zeros: hidden (B, max T', encoder_dim), lengths (B,)."""
        spans = [self._where[i] for i in row_ids]
        lengths = torch.tensor([n for _, n in spans], dtype=torch.int64)
        hidden = self._flat.new_zeros(len(spans), int(lengths.max()), self._flat.shape[1])
        for j, (start, n) in enumerate(spans):
            hidden[j, :n] = self._flat[start : start + n]
        return EncoderOutput(hidden, lengths.to(self._flat.device))
