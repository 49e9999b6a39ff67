"""Prometheus text exposition for ``/metrics``: active streams, queue depth, latency histograms."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Histogram:
    """A cumulative Prometheus histogram (seconds)."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.name, self.help_text, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.total += value
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self.counts[i] += 1
            self.counts[-1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=False):
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {count}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {self.counts[-1]}', f"{self.name}_sum {self.total:.6f}",
                  f"{self.name}_count {self.counts[-1]}"]  # fmt: skip
        return lines


class ServerMetrics:
    """Everything ``/metrics`` reports; gauges are read through callables when rendered."""

    def __init__(self, active_streams: Callable[[], int], queue_depth: Callable[[], int]) -> None:
        self.active_streams = active_streams
        self.queue_depth = queue_depth
        self.finalization = Histogram(
            "speechkit_finalization_delay_seconds", "arrival of a segment's last audio to its final message"
        )
        self.batch_latency = Histogram("speechkit_batch_seconds", "model time per dynamic batch")
        self.batch_sizes = Histogram("speechkit_batch_size", "requests per dynamic batch", (1, 2, 4, 8, 16, 32))
        self.http_requests = Histogram("speechkit_http_request_seconds", "OpenAI-compatible request time")
        self.streams_total = 0
        self.errors_total = 0

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_sizes.observe(size)
        self.batch_latency.observe(seconds)

    def render(self) -> str:
        lines = [
            "# TYPE speechkit_active_streams gauge", f"speechkit_active_streams {self.active_streams()}",
            "# TYPE speechkit_queue_depth gauge", f"speechkit_queue_depth {self.queue_depth()}",
            "# TYPE speechkit_streams_total counter", f"speechkit_streams_total {self.streams_total}",
            "# TYPE speechkit_stream_errors_total counter", f"speechkit_stream_errors_total {self.errors_total}",
        ]  # fmt: skip
        for h in (self.finalization, self.batch_latency, self.batch_sizes, self.http_requests):
            lines += h.render()
        return "\n".join(lines) + "\n"
