"""Deadlines and the bounded queue against a live server whose model is held at a gate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from _grpc_fixtures import start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient, RemoteError


@pytest.fixture
def gated(start_server, tiny_bundle: Path):
    """A server whose model runs only once `gate` is set; `seen` lists the texts that reached it."""
    server = start_server(tiny_bundle, max_batch=4, max_queue=1024)
    gate, seen, entered = threading.Event(), [], []
    rec = server.plane.recommender
    embed = rec.embed_texts

    def held(texts: list[str], batch_size: int = 64):
        entered.append(texts)
        gate.wait(30)
        seen.extend(texts)
        return embed(texts, batch_size=batch_size)

    rec.embed_texts = held  # the model of the served Recommender waits at the gate
    client = RecommenderClient(f"127.0.0.1:{server.port}", timeout=30, max_attempts=1)
    blockers = []
    for n in range(server.batcher.workers):  # one per batch worker, each in its own batch
        blockers.append(threading.Thread(target=client.embed_texts, args=([f"blocker {n}"],)))
        blockers[-1].start()
        deadline = time.monotonic() + 10
        while len(entered) <= n and time.monotonic() < deadline:  # a worker took it and waits at the gate
            time.sleep(0.005)
    time.sleep(0.05)
    yield server, client, gate, seen
    gate.set()
    for blocker in blockers:
        blocker.join(10)
    client.close()


def test_deadline_exceeded_drops_queued_work(gated) -> None:
    server, client, gate, seen = gated
    for call in (
        lambda: client.embed_texts(["late embed"], timeout=0.3),
        lambda: client.search("late search", timeout=0.3),
    ):
        with pytest.raises(RemoteError) as e:
            call()
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.3)  # the server noticed the deadlines too
    gate.set()
    assert client.embed_texts(["after"]).shape == (1, 16)
    assert "late embed" not in seen and "late search" not in seen, "work past its deadline reached the model"
    assert "blocker 0" in seen and "after" in seen


def test_full_queue_is_resource_exhausted_and_recovers(gated) -> None:
    server, client, gate, seen = gated
    big = threading.Thread(target=client.embed_texts, args=([f"pen {i}" for i in range(1024)],))
    big.start()
    deadline = time.monotonic() + 10
    while server.batcher.depth < 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.batcher.depth == 1024
    for call in (lambda: client.embed_texts(["one more"]), lambda: client.search("one more")):
        with pytest.raises(RemoteError) as e:
            call()
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in e.value.details
    assert client.health() == "SERVING"
    gate.set()
    big.join(30)
    assert len([t for t in seen if t.startswith("pen ")]) == 1024
    assert client.search("pen", k=2)
