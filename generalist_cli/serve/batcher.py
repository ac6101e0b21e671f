"""Micro-batching: requests wait in a bounded queue; one worker thread takes what is waiting (up to
``max_batch``, waiting at most ``max_wait`` seconds for more after the first) and transcribes requests with
the same options as one batch (their 30-s windows are encoded and decoded together). A full queue refuses
at once (:class:`Busy`, the server's 503) instead of letting latency grow without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable


class Busy(Exception):
    """The queue is full: try again later."""


@dataclass
class Job:
    item: object  # what run_batch receives, e.g. a waveform
    key: object  # jobs with equal keys may share a batch (e.g. their decoding options)
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[list, object], list],
        *,
        max_batch: int = 8,
        max_wait: float = 0.01,
        queue_size: int = 64,
        lock: threading.Lock | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """``run_batch(items, key) -> results`` (one per item) runs under ``lock`` (shared with other users of
        the model); ``on_batch(size, seconds)`` is told each batch's size and compute time."""
        self.run_batch, self.max_batch, self.max_wait = run_batch, max(1, max_batch), max(0.0, max_wait)
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.lock = lock or threading.Lock()
        self.on_batch = on_batch
        self._thread = threading.Thread(target=self._loop, name="gen-batcher", daemon=True)
        self._thread.start()

    def submit(self, item, key) -> Future:
        """Queue ``item``; its future gets the result or the exception. Raises :class:`Busy` when full."""
        job = Job(item, key)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Busy() from None
        return job.future

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> tuple[list[Job], bool]:
        first = self.queue.get()
        if first is None:
            return [], True
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = (
                    self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    if self.max_wait
                    else self.queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._take()
            groups: dict[object, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                group = [j for j in group if j.future.set_running_or_notify_cancel()]
                if not group:
                    continue
                start = time.perf_counter()
                try:
                    with self.lock:
                        results = self.run_batch([j.item for j in group], key)
                except Exception as exc:  # every waiting request hears of it; the worker goes on
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(group), time.perf_counter() - start)
                for j, result in zip(group, results):
                    j.future.set_result(result)
