"""MicroBatcher: merging, bounds, deadlines and errors, with a fake model that records its runs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the server extra is not installed")

from lmrec.server import BatcherClosed, DeadlineExpired, MicroBatcher, QueueFull  # noqa: E402


class FakeModel:
    """Embeds text "i" as [i, i]; each run takes `delay` seconds and is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.runs: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, str]:
        self.release.wait(10)
        time.sleep(self.delay)
        self.runs.append(list(texts))
        return np.array([[float(t), float(t)] for t in texts], dtype=np.float32), "model-tag"


def test_concurrent_single_texts_share_runs_and_get_their_own_rows() -> None:
    model = FakeModel(delay=0.02)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.01)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: batcher.embed([str(i)], timeout=10), range(64)))
    batcher.close()
    for i, (vectors, tag) in enumerate(results):
        assert tag == "model-tag"
        np.testing.assert_array_equal(vectors, [[i, i]])
    assert sum(len(r) for r in model.runs) == 64
    assert max(len(r) for r in model.runs) <= 8
    assert len(model.runs) <= 16, f"64 concurrent texts took {len(model.runs)} runs: not batched"


def test_a_request_is_never_split_and_a_large_one_runs_alone() -> None:
    model = FakeModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.0, max_queue=64)
    first = batcher.submit(["0"])  # occupies the worker while the rest queue up
    time.sleep(0.05)
    futures = [batcher.submit([str(i) for i in range(10)]), batcher.submit(["1", "2", "3"]), batcher.submit(["4", "5"])]
    model.release.set()
    for f in [first, *futures]:
        f.result(5)
    batcher.close()
    assert model.runs == [["0"], [str(i) for i in range(10)], ["1", "2", "3"], ["4", "5"]]


def test_full_queue_is_refused_not_grown() -> None:
    model = FakeModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, max_queue=4)
    running = batcher.submit(["0", "1"])
    time.sleep(0.05)  # the worker took it and waits inside the model
    queued = batcher.submit(["2", "3", "4"])
    with pytest.raises(QueueFull, match="limit 4"):
        batcher.submit(["5", "6"])
    assert batcher.depth == 3
    model.release.set()
    running.result(5), queued.result(5)
    batcher.close()


def test_expired_requests_are_dropped_unrun() -> None:
    model = FakeModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0)
    blocker = batcher.submit(["0"])
    time.sleep(0.05)
    with pytest.raises(DeadlineExpired):
        batcher.embed(["1"], timeout=0.05)  # gives up while queued behind the blocker
    late = batcher.submit(["2"], deadline=time.monotonic() + 0.01)
    time.sleep(0.05)  # its deadline passes in the queue
    model.release.set()
    blocker.result(5)
    assert late.cancelled()
    batcher.embed(["3"], timeout=5)
    batcher.close()
    assert model.runs == [["0"], ["3"]], "expired work reached the model"


def test_model_errors_reach_every_caller_and_the_worker_survives() -> None:
    calls = []

    def flaky(texts: list[str]) -> tuple[np.ndarray, None]:
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return np.zeros((len(texts), 2), dtype=np.float32), None

    batcher = MicroBatcher(flaky, max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="exploded"):
        batcher.embed(["a"], timeout=5)
    vectors, _ = batcher.embed(["b", "c"], timeout=5)
    assert vectors.shape == (2, 2)
    batcher.close()


def test_closed_batcher_refuses_work_but_finishes_the_queue() -> None:
    model = FakeModel(delay=0.01)
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0)
    pending = [batcher.submit([str(i)]) for i in range(5)]
    batcher.close(timeout=5)
    assert all(f.result(0)[0].shape == (1, 2) for f in pending)
    with pytest.raises(BatcherClosed):
        batcher.submit(["x"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_wait_s": 2.0}, "max_wait"),
        ({"max_batch": 8, "max_queue": 4}, "max_queue"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MicroBatcher(FakeModel(), **kwargs)
