"""Dynamic batching: streams call one shared model step from their worker threads; requests that are
ready within ``wait_s`` of each other are decoded in one batch of at most ``max_batch`` requests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from speechkit.streaming.step import ModelStep, StepRequest, StepResult


class Batcher:
    """A thread-safe :class:`~speechkit.streaming.step.ModelStep` in front of a real one.

    ``__call__`` blocks its caller until the batch holding its requests is done; the model runs on one
    worker thread, so it never sees two batches at once. ``on_batch(size, seconds)`` observes each batch.
    """

    def __init__(self, step: ModelStep, max_batch: int = 8, wait_s: float = 0.005, on_batch=None) -> None:
        self.step = step
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="speechkit-batcher", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Calls waiting for the model."""
        return self._queue.qsize()

    def __call__(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        if not requests:
            return []
        future: Future = Future()
        self._queue.put((list(requests), future))
        return future.result()

    def close(self) -> None:
        """Stop the worker after the calls already queued."""
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _run(self) -> None:
        import time

        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.monotonic() + self.wait_s
            while sum(len(r) for r, _ in jobs) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(job)
            started = time.monotonic()
            try:
                results = self.step([r for requests, _ in jobs for r in requests])
            except Exception as err:  # noqa: BLE001  # handed to every waiting caller, never swallowed
                for _, future in jobs:
                    future.set_exception(err)
                continue
            if self.on_batch is not None:
                self.on_batch(sum(len(r) for r, _ in jobs), time.monotonic() - started)
            i = 0
            for requests, future in jobs:
                future.set_result(results[i : i + len(requests)])
                i += len(requests)
