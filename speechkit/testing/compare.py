"""The error metric of speechkit's parity tests: max|ours - ref| / max|ref|, with an absolute floor."""

from __future__ import annotations

import torch


def relative_error(ours: torch.Tensor, ref: torch.Tensor, floor: float = 1e-6) -> float:
    """max|ours - ref| / max(max|ref|, floor), computed in float64."""
    ours, ref = ours.double(), ref.double()
    if ours.shape != ref.shape:
        raise AssertionError(f"shape mismatch: ours {tuple(ours.shape)} vs reference {tuple(ref.shape)}")
    return float((ours - ref).abs().max() / max(float(ref.abs().max()), floor))
