"""Fixtures for the gRPC server tests: a tiny bundle, in-process servers, `lmrec serve` subprocesses.

Test modules import the fixtures they use from here. (Not a conftest.py: a second module named
`conftest` would shadow tests/conftest.py for the tests that import constants from it.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the server extra (grpcio) is not installed")
pytest.importorskip("onnxruntime", reason="the server needs an ONNX Runtime build (extra cpu)")

from _tiny_bundle import make_tiny_bundle  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)
from lmrec.server import RecommenderClient, RecommenderServer, ServerConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 items in 4 topics, dim 16, with metadata (brand, topic, tags) and popularity."""
    return make_tiny_bundle(tmp_path_factory.mktemp("server-bundle") / "tiny")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """start_server(bundle, **config) -> a loaded in-process RecommenderServer on a free port."""
    servers: list[RecommenderServer] = []

    def start(bundle: Path, state_dir: Path | None = None, **config) -> RecommenderServer:
        server = RecommenderServer(ServerConfig(bundle=bundle, state_dir=state_dir or tmp_path / f"state{len(servers)}",
                                                port=0, **config))
        servers.append(server)
        server.start()
        assert server.wait_until_loaded(60)
        return server

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture
def server(start_server, tiny_bundle: Path) -> RecommenderServer:
    return start_server(tiny_bundle)


@pytest.fixture
def client(server: RecommenderServer) -> Iterator[RecommenderClient]:
    with RecommenderClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        yield c


class ServeProcess:
    """`lmrec serve` in a subprocess; its stderr goes to a file so the pipe never blocks it."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.log = log
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmrec", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=self._log_file, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
        )
        self.port: int | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_port(self, timeout: float = 60) -> int:
        """The port from the 'listening on' line (printed once bound, before the bundle loads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.output())
            if found:
                self.port = int(found[-1])
                return self.port
            if self.proc.poll() is not None:
                raise AssertionError(f"lmrec serve exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"lmrec serve did not listen within {timeout} s:\n{self.output()}")

    def wait_serving(self, client: RecommenderClient, timeout: float = 60) -> float:
        """Seconds until health says SERVING."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if client.health(timeout=1) == "SERVING":
                    return time.monotonic() - start
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"lmrec serve exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"lmrec serve not SERVING within {timeout} s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log_file.close()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator:
    """serve_process(*args) -> a started ServeProcess; killed at teardown if still running."""
    procs: list[ServeProcess] = []

    def start(*args: str, env: dict | None = None) -> ServeProcess:
        proc = ServeProcess(list(args), tmp_path / f"serve{len(procs)}.log", env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
