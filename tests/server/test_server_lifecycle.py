"""`lmrec serve` as a process: health while loading, graceful SIGTERM, SIGHUP, startup errors."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import lmrec
import pytest
from _grpc_fixtures import serve_process, server, start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from _tiny_bundle import make_tiny_bundle
from grpc_health.v1 import health_pb2
from lmrec.client import RecommenderClient, RemoteError
from lmrec.server import RecommenderServer, ServerConfig


def test_not_serving_while_loading(monkeypatch, tiny_bundle: Path, tmp_path: Path) -> None:
    release = threading.Event()
    real_load = lmrec.Recommender.load

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(lmrec.Recommender, "load", slow_load)
    server = RecommenderServer(ServerConfig(bundle=tiny_bundle, state_dir=tmp_path / "state", port=0))
    server.start()
    try:
        with RecommenderClient(f"127.0.0.1:{server.port}", max_attempts=1) as client:
            assert client.health() == "NOT_SERVING"
            assert client.health("lmrec.v1.Recommender") == "NOT_SERVING"
            for call in (lambda: client.search("pen"), lambda: client.embed_texts(["pen"]),
                         lambda: client.add_items(["a"], texts=["pen"])):
                with pytest.raises(RemoteError) as e:
                    call()
                assert e.value.code == grpc.StatusCode.UNAVAILABLE and "loading" in e.value.details
            release.set()
            assert server.wait_until_loaded(30)
            assert client.health() == client.health("lmrec.v1.Recommender") == "SERVING"
            assert client.search("pen", k=1)
    finally:
        release.set()
        server.stop(0)


def test_sigterm_drains_in_flight_calls_and_snapshots(serve_process, tiny_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = serve_process("--bundle", str(tiny_bundle), "--state-dir", str(state), "--grace", "30")
    port = proc.wait_port()
    with RecommenderClient(f"127.0.0.1:{port}", timeout=60) as client:
        assert proc.wait_serving(client) < 60
        client.add_items(["before-stop"], texts=["guitar pick"])
        watch = client.health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        texts = [f"pen ink {i % 7}" for i in range(3000)]
        received: list[int] = []
        started = threading.Event()
        errors: list[Exception] = []

        def stream() -> None:
            try:
                for _offset, vectors in client.embed_texts_stream(texts, chunk_size=10):
                    received.append(len(vectors))
                    started.set()
            except Exception as e:  # noqa: BLE001 - checked below
                errors.append(e)
                started.set()

        thread = threading.Thread(target=stream)
        thread.start()
        assert started.wait(30)
        proc.signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        thread.join(60)
        assert not errors, errors
        assert sum(received) == len(texts), "the in-flight stream was cut short"
        with pytest.raises(RemoteError) as e:  # new calls are refused while draining or after
            RecommenderClient(f"127.0.0.1:{port}", max_attempts=1, timeout=2).search("pen")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert proc.wait(60) == 0, proc.output()
    assert "final snapshot written" in proc.output()
    assert list(state.glob("snapshot-*")), "no snapshot after a graceful stop"
    assert proc.output().count("SIGTERM") == 1


def test_sighup_rereads_tokens(serve_process, tiny_bundle: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    old, new = "o" * 20, "n" * 20
    tokens.write_text(f"write {old}\n")
    proc = serve_process(
        "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "state"), "--token-file", str(tokens)
    )
    address = f"127.0.0.1:{proc.wait_port()}"
    with RecommenderClient(address, token=new, max_attempts=1) as client:
        proc.wait_serving(client)
        with pytest.raises(RemoteError):
            client.model_info()
        tokens.write_text(f"read {new}\n")
        proc.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.model_info()["dim"] == 16
                break
            except RemoteError:
                assert time.monotonic() < deadline, proc.output()
                time.sleep(0.1)
        with pytest.raises(RemoteError) as e:
            client.add_items(["x"], texts=["pen"])
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    proc.signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_reload_to_another_bundle_carries_the_state_dirs_writes(
    start_server, tiny_bundle: Path, tmp_path: Path
) -> None:
    """The state directory is tied to one bundle: a swap to another (a model update) replays its
    writes onto the new bundle (`Recommender.reopen`), and they stay durable."""
    current = tmp_path / "current"
    os.symlink(tiny_bundle, current)
    state = tmp_path / "state"
    server = start_server(current, state_dir=state)
    other = make_tiny_bundle(tmp_path / "other", n_items=40, seed=1)
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        client.add_items(["kept-1"], texts=["pen"])
        assert server.reload() is False  # unchanged bundle: nothing to do
        tmp_link = tmp_path / "next"
        os.symlink(other, tmp_link)
        os.replace(tmp_link, current)
        assert server.reload() is True
        assert client.health() == "SERVING"
        assert int(client.model_info()["catalogue_size"]) == 41
        client.add_items(["kept-2"], texts=["ink"])
    server.stop(0)
    again = start_server(current, state_dir=state)
    with RecommenderClient(f"127.0.0.1:{again.port}") as client:
        assert client.get_item("kept-1") and client.get_item("kept-2")


def test_unloadable_bundle_exits_2_with_the_reason(serve_process, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-bundle"
    empty.mkdir()
    proc = serve_process("--bundle", str(empty), "--state-dir", str(tmp_path / "state"))
    assert proc.wait(60) == 2
    assert "manifest.json is missing" in proc.output()


def test_busy_port_exits_2(serve_process, server, tiny_bundle: Path, tmp_path: Path) -> None:
    busy = serve_process(  # the last --port wins over the fixture's --port 0
        "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "s2"), "--port", str(server.port))
    assert busy.wait(60) == 2
    assert "cannot listen on 127.0.0.1" in busy.output()


def test_state_dir_in_use_exits_2(serve_process, server, tiny_bundle: Path) -> None:
    proc = serve_process("--bundle", str(tiny_bundle), "--state-dir", str(server.config.state_dir))
    assert proc.wait(60) == 2
    assert "in use by another process" in proc.output()
