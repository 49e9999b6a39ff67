"""Latency metrics of a streamed output, as SimulEval defines them for speech input (times in seconds).

``delays[i]`` is the stream time at which output unit i (a word; a character for ja/zh) was committed;
``source_s`` the input duration; ``ref_len`` the length of the offline output of the same audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_lagging(delays: Sequence[float], source_s: float, ref_len: int) -> float:
    """AL (Ma et al., 2019): mean of ``d_i - (i - 1) * source_s / ref_len`` over the units emitted up to
    and including the first one emitted once the whole input was read (SimulEval's ``AverageLagging``)."""
    if not delays:
        raise ValueError("average lagging needs at least one emitted unit")
    if ref_len < 1 or source_s <= 0:
        raise ValueError(f"average lagging needs ref_len >= 1 and source_s > 0, got {ref_len}, {source_s}")
    if delays[0] > source_s:
        return float(delays[0])
    rate = source_s / ref_len  # seconds of input per ideal output unit
    total, tau = 0.0, 0
    for i, d in enumerate(delays):
        total += d - i * rate
        tau = i + 1
        if d >= source_s:
            break
    return total / tau


def length_adaptive_average_lagging(delays: Sequence[float], source_s: float, ref_len: int) -> float:
    """LAAL (Papi et al., 2022): AL with the ideal rate from ``max(len(delays), ref_len)``, so an output
    longer than the reference is not rewarded for it."""
    return average_lagging(delays, source_s, max(len(delays), ref_len))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation), or None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None
