"""NeMo "dw_striding" 8x subsampling of the Conformer input (reference B.3)."""

from __future__ import annotations

import torch
from torch import nn

from speechkit.model.config import EncoderConfig


def stride2_length(length: torch.Tensor) -> torch.Tensor:
    """Output length of a kernel-3, stride-2, padding-1 conv: ceil(length / 2)."""
    return torch.div(length + 1, 2, rounding_mode="floor")


def zero_beyond(x: torch.Tensor, lengths: torch.Tensor, time_dim: int) -> torch.Tensor:
    """Zero every position of ``x`` at or beyond each item's valid length along ``time_dim``."""
    steps = torch.arange(x.shape[time_dim], device=x.device)
    valid = steps[None, :] < lengths[:, None].to(x.device)  # (B, T)
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[time_dim] = x.shape[time_dim]
    return x * valid.view(shape).to(x.dtype)


class ConvSubsampling(nn.Module):
    """Input (B, T, 80) treated as a 1-channel image (time x mel); both axes strided by 2 per stage.

    ``conv`` is a Sequential whose indices follow the checkpoint (0: full conv, then per stage a
    depthwise strided conv, a pointwise conv and a ReLU), so the official names map one to one.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        ch = config.conv_channels
        # in-place ReLUs: no second buffer the size of a conv output (64 x 30 s clips: 7.9 GB after the first)
        layers: list[nn.Module] = [nn.Conv2d(1, ch, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True)]
        for _ in range(config.subsampling_stages - 1):
            layers += [
                nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1, groups=ch),
                nn.Conv2d(ch, ch, kernel_size=1),
                nn.ReLU(inplace=True),
            ]
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(ch * config.subsampled_freq, config.attention_dim)
        # Sequential indices of the strided convs: each starts a stage
        self.stage_starts = [
            i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
        ]

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Subsample normalised features.

        Args:
            x: (B, T, n_mels) normalised log-mel.
            lengths: (B,) valid frames per item, or None when every item fills T.

        Returns:
            (B, ceil(T / 8), attention_dim) tokens and (B,) valid tokens (None if ``lengths`` is None).
        """
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for i, layer in enumerate(self.conv):
            if lengths is not None and i in self.stage_starts:
                # A single unpadded utterance sees the conv's zero padding right after its last
                # frame; a padded batch item must see zeros there too, not its own padding.
                h = zero_beyond(h, lengths, time_dim=2)
                lengths = stride2_length(lengths)
            h = layer(h)
        b, c, t, f = h.shape
        # channel is the slow index of the flattened feature: c * F' + f
        h = self.out(h.transpose(1, 2).reshape(b, t, c * f))
        return h, lengths
