"""Detect a runaway repetition loop at the end of a hypothesis (a known failure of LLM decoders)."""

from __future__ import annotations

from collections.abc import Sequence

MIN_SPAN = 32  # tokens the repeated tail must cover
MIN_REPEATS = 4  # times the block must occur back to back
MAX_PERIOD = 64  # longest repeated block considered, in tokens


def loop_start(tokens: Sequence[int]) -> tuple[int, int] | None:
    """(start, period) of a tail made of one block repeated, or None.

    A loop is a tail of at least ``max(MIN_SPAN, MIN_REPEATS * period)`` tokens with period
    ``period`` (so "no, no, no" needs many repeats, a 20-token sentence four). ``start`` is where
    the periodic run begins; keeping ``tokens[:start + period]`` keeps one copy of the block.
    """
    n = len(tokens)
    last = tokens[-1] if n else None
    for period in range(1, min(MAX_PERIOD, n // MIN_REPEATS) + 1):
        if tokens[n - 1 - period] != last:
            continue  # cheap filter: most periods fail on the last token already
        span = max(MIN_SPAN, MIN_REPEATS * period)
        if span > n or any(tokens[i] != tokens[i + period] for i in range(n - span, n - period)):
            continue
        start = n - span
        while start > 0 and tokens[start - 1] == tokens[start - 1 + period]:
            start -= 1
        return start, period
    return None
