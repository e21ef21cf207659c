"""The server's capacity: it sheds calls past its in-progress limit, sets its own thread budgets
(BLAS, ONNX Runtime, tokenizer), and holds a modest open-loop rate. No timing assertions that a
loaded CI box could break: speed claims belong to `lmrec bench server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from _grpc_fixtures import serve_process, start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient, RemoteError
from lmrec.server import BlasLimit, ServerConfig, ThreadBudget, cores
from lmrec.server.v1 import recommender_pb2 as pb
from lmrec.server.v1 import recommender_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


def _blas_threads() -> list[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    found = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not found:
        pytest.skip("numpy has no BLAS library that threadpoolctl can see")
    return found


def test_calls_past_the_in_progress_limit_are_resource_exhausted(start_server, tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, max_concurrent_rpcs=4)
    rec = server.plane.recommender
    embed, gate, entered = rec.embed_texts, threading.Event(), []

    def held(texts: list[str], batch_size: int = 64):
        entered.extend(texts)
        gate.wait(30)
        return embed(texts, batch_size=batch_size)

    rec.embed_texts = held  # every model run waits at the gate: Embed calls stay in progress
    address = f"127.0.0.1:{server.port}"
    with RecommenderClient(address, timeout=30, max_attempts=1) as client:
        callers = [threading.Thread(target=client.embed_texts, args=([f"pen {n}"],)) for n in range(4)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while len(entered) + server.batcher.depth < 4 and time.monotonic() < deadline:  # all 4 slots taken
            time.sleep(0.005)
        assert len(entered) + server.batcher.depth == 4
        started = time.monotonic()
        for call in (lambda: client.recommend(["office-0"], k=3), lambda: client.embed_texts(["one more"]),
                     lambda: client.search("pen")):
            with pytest.raises(RemoteError) as e:
                call()
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # at once, not at the 30 s deadline
        assert time.monotonic() - started < 25
        gate.set()
        for caller in callers:
            caller.join(30)
        assert len(client.recommend(["office-0"], k=3)) == 3  # capacity is back once they finish


def test_recommend_past_its_slots_and_queue_is_refused_at_once(start_server, tiny_bundle: Path) -> None:
    """2 Recommend calls compute (held at a gate), 3 wait: the sixth is RESOURCE_EXHAUSTED, not queued."""
    server = start_server(tiny_bundle, compute_slots=2, max_waiting_calls=3)
    rec = server.plane.recommender
    recommend, gate, entered = rec.recommend, threading.Event(), []

    def held(*args, **kwargs):
        entered.append(1)
        gate.wait(30)
        return recommend(*args, **kwargs)

    rec.recommend = held
    gate_of = server.plane.compute
    with RecommenderClient(f"127.0.0.1:{server.port}", timeout=30, max_attempts=1) as client:
        results: list = []
        callers = [threading.Thread(target=lambda: results.append(client.recommend(["office-0"], k=3)))
                   for _ in range(5)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while (len(entered) < 2 or gate_of.waiting < 3) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (len(entered), gate_of.running, gate_of.waiting) == (2, 2, 3)
        with pytest.raises(RemoteError) as e:
            client.similar_items("office-0", k=3)
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many calls in progress" in e.value.details
        assert client.embed_texts(["pen"]).shape == (1, 16)  # other kinds of call are still answered
        gate.set()
        for caller in callers:
            caller.join(30)
        assert len(results) == 5 and all(len(r) == 3 for r in results)  # the waiting ones ran, in turn
        assert (gate_of.running, gate_of.waiting, gate_of.refused) == (0, 0, 1)


def test_a_waiting_call_gives_up_at_its_deadline() -> None:
    from lmrec.server import ComputeGate, DeadlineExpired, TooBusy

    gate = ComputeGate(1, 1)
    with gate.slot():
        with pytest.raises(DeadlineExpired):
            with gate.slot(timeout=0.05):
                pass
        assert gate.waiting == 0
        held = threading.Event()
        release = threading.Event()

        def waiter() -> None:
            with gate.slot(timeout=30):
                held.set()
                release.wait(30)

        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 10
        while gate.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(TooBusy):
            with gate.slot():
                pass
    assert held.wait(10)  # the slot passed straight to the waiter
    release.set()
    thread.join(10)
    assert (gate.running, gate.waiting) == (0, 0)


def test_the_default_limit_leaves_room_for_batching_but_bounds_the_queue() -> None:
    config = ServerConfig(bundle=Path("unused"), state_dir=Path("unused"))
    assert config.workers <= config.max_concurrent_rpcs <= 512  # was 1024: seconds of queued Recommend calls
    assert config.max_concurrent_rpcs >= 128 + config.max_batch  # 128 one-text Embed clients fit


def test_the_server_sets_its_thread_budget_and_restores_it(start_server, tiny_bundle: Path) -> None:
    before = _blas_threads()
    env_before = os.environ.get("TOKENIZERS_PARALLELISM")
    server = start_server(tiny_bundle)
    try:
        assert _blas_threads() == [1] * len(before)
        assert os.environ.get("TOKENIZERS_PARALLELISM") == (env_before or "false")
        session = server.plane.recommender.catalogue.encoder.session
        assert session.get_session_options().intra_op_num_threads == 1  # the run stays on its batcher thread
        assert server.batcher.workers == cores()  # one model run per core, side by side
        assert "BLAS 1 thread" in server.budget.describe()
    finally:
        server.stop(0)
    assert _blas_threads() == before
    assert os.environ.get("TOKENIZERS_PARALLELISM") == env_before


def test_configured_onnx_threads_share_the_cores_between_batch_workers() -> None:
    assert ThreadBudget.plan("cpu", None, 64, 256).onnx_threads == 1
    two = ThreadBudget.plan("cpu", 2, 64, 256)
    assert (two.onnx_threads, two.batch_workers) == (2, max(1, cores() // 2))
    assert ThreadBudget.plan("cuda", None, 64, 256).batch_workers == 1


def test_blas_limit_restores_what_it_found() -> None:
    before = _blas_threads()
    limit = BlasLimit(1)
    try:
        assert _blas_threads() == [1] * len(before)
    finally:
        limit.restore()
    assert _blas_threads() == before


SINGLE_QUERY_SEARCH = """
import json, os, numpy as np
from lmrec import VectorIndex

def helper_cpu():  # CPU seconds (schedstat: nanoseconds) of every thread but this one: BLAS's pool
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != os.getpid():
            total += int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
    return total / 1e9

rng = np.random.default_rng(0)
vectors = rng.normal(size=(4000, 256)).astype(np.float32)
index = VectorIndex(256, params={"M": 4, "ef_construction": 8}, threads=1)  # the graph is not searched
index.add([str(i) for i in range(4000)], vectors)
queries = rng.normal(size=(1000, 256)).astype(np.float32)
start = helper_cpu()
for q in queries:
    index.search(q, k=10, mode="exact")
searched = helper_cpu() - start
start = helper_cpu()
for q in queries:
    q[None] @ vectors.T
print(json.dumps({"search": searched, "blas": helper_cpu() - start}))
"""


@pytest.mark.skipif(not Path("/proc/self/schedstat").is_file(), reason="reads per-thread CPU time from /proc")
def test_single_query_exact_search_wakes_no_blas_threads(tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", SINGLE_QUERY_SEARCH], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    used = json.loads(out.stdout)
    if used["blas"] < 0.02:
        pytest.skip(f"BLAS runs this product on one thread here: nothing to tell apart ({used})")
    assert used["search"] < 0.2 * used["blas"], f"single-query search ran on BLAS's threads: {used}"


def test_lmrec_serve_holds_a_modest_open_loop_rate(serve_process, tiny_bundle: Path, tmp_path: Path) -> None:
    """100 Recommend calls/s for 2 s, each sent on schedule whatever the earlier ones did: none fails."""
    proc = serve_process("--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "state"))
    port = proc.wait_port()
    with RecommenderClient(f"127.0.0.1:{port}") as client:
        proc.wait_serving(client)
        assert "thread budget:" in proc.output() and "BLAS 1 thread" in proc.output()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.RecommenderStub(channel)
        ids = [json.loads(line)["id"] for line in (tiny_bundle / "items.jsonl").read_text().splitlines()]
        requests = [pb.RecommendRequest(history=ids[n:n + 20], k=10) for n in range(0, 100, 10)]
        stub.Recommend(requests[0], timeout=10)  # warm
        rate, count, futures = 100, 200, []
        start = time.monotonic()
        for n in range(count):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(stub.Recommend.future(requests[n % len(requests)], timeout=10))
        errors = [f.exception() for f in futures if f.exception() is not None]
        assert not errors, f"{len(errors)} of {count} calls failed, first: {errors[0]}"
        assert all(len(f.result().items) == 10 for f in futures)
        channel.close()
