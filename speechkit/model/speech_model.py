"""The assembled speech branch: audio tower + LoRA-A decoder, with the audio embedding merge."""

from __future__ import annotations

import torch
from torch import nn

from speechkit.errors import ConfigError
from speechkit.model.audio_tower import AudioTower
from speechkit.model.config import SpeechModelConfig
from speechkit.model.decoder import Decoder
from speechkit.model.encoder import EncoderOutput


class SpeechModel(nn.Module):
    """Encoder, projectors and decoder of Phi-4-multimodal's speech path.

    Names: ``audio.encoder.*``, ``audio.projector.*``, ``decoder.*`` (see ``convert_official``).
    """

    def __init__(self, config: SpeechModelConfig, audio_token_id: int) -> None:
        super().__init__()
        self.config = config
        self.audio_token_id = audio_token_id
        self.audio = AudioTower(config)
        self.decoder = Decoder(config.decoder, config.speech_lora)

    def embed_inputs(self, input_ids: torch.Tensor, audio: EncoderOutput | None) -> torch.Tensor:
        """Token embeddings (B, L, hidden) with audio embeddings written over the audio tokens.

        Audio clips are consumed in order: the first ``audio.lengths[0]`` audio-token positions
        (row-major over batch and sequence) get clip 0's embeddings, and so on.
        """
        embeds = self.decoder.embed(input_ids)
        positions = input_ids == self.audio_token_id
        n_positions = int(positions.sum())
        if audio is None:
            if n_positions:
                raise ConfigError(f"the prompt has {n_positions} audio tokens but no audio was given")
            return embeds
        clips = [audio.hidden[i, :n] for i, n in enumerate(audio.lengths.tolist())]
        values = torch.cat(clips).to(embeds.dtype)
        if values.shape[0] != n_positions:
            raise ConfigError(
                f"the prompt has {n_positions} audio tokens but the audio gives {values.shape[0]} embeddings"
            )
        return embeds.masked_scatter(positions.unsqueeze(-1), values)
