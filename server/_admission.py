"""Admission for calls that compute on the CPU: a few run, a bounded number wait, the rest are refused.

`Recommend` and `SimilarItems` spend their time in the user model and the index, on the CPU.
Running more of them at once than there are cores only makes them contend (for the cores and
for the interpreter lock, which the gRPC thread that accepts new calls also needs), and letting
an unbounded number wait turns an overload into calls that all time out: the queue grows while
each waiter burns its deadline. So `slots` calls compute at once, up to `max_waiting` more wait
their turn in arrival order (for at most their deadline), and a call that finds the queue full
is refused at once with `TooBusy` (RESOURCE_EXHAUSTED: the proto's "too many calls in
progress"), which a client can retry with backoff or send to another replica.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from ._batching import DeadlineExpired


class TooBusy(Exception):
    """Too many calls are in progress; the caller should back off and retry."""


class ComputeGate:
    """At most `slots` callers inside `slot()` at once and `max_waiting` waiting, first come first served."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        if slots < 1 or max_waiting < 0:
            raise ValueError(f"slots ({slots}) must be >= 1 and max_waiting ({max_waiting}) >= 0")
        self.slots = slots
        self.max_waiting = max_waiting
        self.refused = 0
        self._running = 0
        self._waiting: list[threading.Event] = []  # in arrival order
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one slot while inside; TooBusy when the queue is full, DeadlineExpired when
        `timeout` seconds pass before a slot frees."""
        turn = None
        with self._lock:
            if self._running < self.slots and not self._waiting:
                self._running += 1
            elif len(self._waiting) >= self.max_waiting:
                self.refused += 1
                raise TooBusy(f"too many calls in progress ({self._running} computing, {len(self._waiting)} "
                              "waiting); retry with backoff")
            else:
                turn = threading.Event()
                self._waiting.append(turn)
        if turn is not None:
            self._wait_for(turn, timeout)
        try:
            yield
        finally:
            self._release()

    def _wait_for(self, turn: threading.Event, timeout: float | None) -> None:
        started = time.monotonic()
        if turn.wait(timeout):
            return  # the slot was handed over by _release
        with self._lock:
            if turn in self._waiting:
                self._waiting.remove(turn)
                raise DeadlineExpired(f"deadline passed after {time.monotonic() - started:.3f} s waiting for a "
                                      "free slot")
        # handed over between the timeout and the lock: it is ours now

    def _release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.pop(0).set()  # the slot passes straight to the oldest waiter
            else:
                self._running -= 1


__all__ = ["ComputeGate", "TooBusy"]
