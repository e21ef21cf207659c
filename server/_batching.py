"""Dynamic micro-batching: concurrent small embedding requests become one model run.

A transformer on a CPU costs nearly the same for 1 text as for 16 short ones, so the server
queues the texts of concurrent `Embed`/`Search` calls and one worker thread runs them together:
it waits at most `max_wait_s` after the oldest queued request for more to arrive, and takes at
most `max_batch` texts (a request is never split; a larger one runs alone). While the model runs,
new requests queue up, so under load batches fill without any waiting. The queue is bounded in
texts (`QueueFull` when it would overflow) and a request whose deadline passes before its turn is
dropped unrun (`DeadlineExpired`).

With `workers` > 1, that many model runs go on side by side (the server gives each one core: one
ONNX Runtime thread per run). One worker at a time forms the next batch while the others run,
so a batch fills during the runs before it instead of waiting behind them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class QueueFull(Exception):
    """The batching queue holds too many texts; the caller should back off and retry."""


class DeadlineExpired(Exception):
    """The request's deadline passed before its batch ran; its work was dropped."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


RunFn = Callable[[list[str]], "tuple[np.ndarray, Any]"]


@dataclass
class _Entry:
    texts: Sequence[str]
    deadline: float | None  # time.monotonic() value
    enqueued: float
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Queue plus `workers` worker threads; `embed(texts, timeout)` is what request handlers call.

    `run(texts)` returns `(vectors, tag)`: one row per text, and any value that identifies what
    produced them (the server passes the Recommender, so a search uses the index of the model
    that embedded its query, even across a bundle swap).
    """

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 4096,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0 <= max_wait_s <= 1:
            raise ValueError(f"max_wait must be between 0 and 1000 ms, got {max_wait_s * 1000:g} ms")
        if max_queue < max_batch:
            raise ValueError(f"max_queue ({max_queue}) must be >= max_batch ({max_batch})")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Entry] = deque()
        self._queued_texts = 0
        self._closed = False
        self._cond = threading.Condition()
        self._forming = threading.Lock()  # one worker at a time gathers the next batch
        self._workers = [threading.Thread(target=self._loop, name=f"lmrec-batcher-{n}", daemon=True)
                         for n in range(workers)]
        for worker in self._workers:
            worker.start()

    @property
    def depth(self) -> int:
        """Texts waiting in the queue (not counting the batch being run)."""
        return self._queued_texts

    def submit(self, texts: Sequence[str], deadline: float | None = None) -> Future:
        """Queue `texts`; the future resolves to `(vectors, tag)`. Raises QueueFull or BatcherClosed."""
        if not texts:
            raise ValueError("texts must not be empty")
        entry = _Entry(texts=texts, deadline=deadline, enqueued=time.monotonic())
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            # An empty queue always accepts one request, however large: callers bound request size.
            if self._queue and self._queued_texts + len(texts) > self.max_queue:
                raise QueueFull(
                    f"embedding queue full ({self._queued_texts} texts queued, limit {self.max_queue}); "
                    "retry with backoff"
                )
            self._queue.append(entry)
            self._queued_texts += len(texts)
            self._cond.notify()
        return entry.future

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> tuple[np.ndarray, Any]:
        """Embed `texts` in whatever batch forms; DeadlineExpired when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        future = self.submit(texts, deadline)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()  # dropped if still queued; a running batch just discards the rows
            raise DeadlineExpired(f"deadline passed after {timeout:.3f} s waiting for the model") from None
        except CancelledError:
            raise DeadlineExpired("request dropped before its batch ran") from None

    @property
    def workers(self) -> int:
        return len(self._workers)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish what is queued, and stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _take_batch(self) -> list[_Entry] | None:
        with self._forming, self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            fire_at = self._queue[0].enqueued + self.max_wait_s
            while self._queued_texts < self.max_batch and not self._closed:
                remaining = fire_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Entry] = []
            n = 0
            now = time.monotonic()
            while self._queue and (not batch or n + len(self._queue[0].texts) <= self.max_batch):
                entry = self._queue.popleft()
                self._queued_texts -= len(entry.texts)
                if entry.deadline is not None and entry.deadline <= now:
                    entry.future.cancel()
                    continue
                if not entry.future.set_running_or_notify_cancel():
                    continue  # its caller gave up (deadline or disconnect)
                batch.append(entry)
                n += len(entry.texts)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            texts = [t for entry in batch for t in entry.texts]
            try:
                vectors, tag = self._run(texts)
            except Exception as e:  # noqa: BLE001 - every waiting caller must hear about it
                for entry in batch:
                    entry.future.set_exception(e)
                continue
            if self._on_batch is not None:
                self._on_batch(len(texts))
            start = 0
            for entry in batch:
                end = start + len(entry.texts)
                entry.future.set_result((vectors[start:end], tag))
                start = end
