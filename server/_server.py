"""Server lifecycle: bind, load the bundle in the background, serve, snapshot, swap, stop.

The port is bound before the bundle loads, so orchestrators see grpc.health.v1 NOT_SERVING (not
a refused connection) while loading; RPCs meanwhile answer UNAVAILABLE. SIGTERM/SIGINT: health
goes NOT_SERVING, new calls are refused, in-flight ones get `grace_s` to finish, then a final
snapshot is written. SIGHUP: the token file is reread and the bundle reloaded from its path (a
new export can be swapped in behind a symlink); calls in flight finish on the old Recommender.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lmrec import LmrecError, Manifest, MissingDependencyError, Recommender, cuda_available

from ._dataplane import DataPlane
from ._handlers import SERVICE_NAME, generic_handler, write_methods
from ._interceptors import AuthInterceptor, Metrics, MetricsInterceptor, TokenAuth
from ._limits import Limits
from ._servicer import RecommenderServicer
from ._threads import ThreadBudget

log = logging.getLogger("lmrec.server")

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServerConfig:
    """Everything `lmrec serve` takes; the defaults are the CLI's.

    Threads (see lmrec.server._threads for why): `threads` is ONNX Runtime's intra-op threads per
    model run, default 1 on the CPU, with one micro-batcher worker per `threads` cores; `workers`
    gRPC threads answer calls.

    Load shedding, so that an overload is answered RESOURCE_EXHAUSTED at once instead of queueing
    calls until their deadlines pass: `compute_slots` Recommend/SimilarItems calls compute at once
    (None: one per core) and at most `max_waiting_calls` more wait (32: under 0.1 s of Recommend
    work on 2 cores); Embed/Search texts are bounded by `max_queue`; beyond `max_concurrent_rpcs` calls
    in progress of any kind (running or waiting for a worker) grpc refuses new ones. Embed/Search
    calls wait for the model without a core, so that limit leaves room for many of them.
    """

    bundle: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    auth: TokenAuth | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 4096
    metrics_port: int | None = None
    snapshot_interval_s: float = 300.0
    grace_s: float = 10.0
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    workers: int = 64
    max_concurrent_rpcs: int = 256
    compute_slots: int | None = None
    max_waiting_calls: int = 32
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise LmrecError("--tls-cert and --tls-key go together: give both or neither")
        if not 0 <= self.port <= 65535:
            raise LmrecError(f"--port: {self.port}, must be 0 to 65535")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise LmrecError(f"--metrics-port: {self.metrics_port}, must be 0 to 65535")
        if not 1 <= self.max_batch <= 1024:
            raise LmrecError(f"--max-batch: {self.max_batch}, must be 1 to 1024")
        if not 0 <= self.max_wait_ms <= 1000:
            raise LmrecError(f"--max-wait-ms: {self.max_wait_ms:g}, must be 0 to 1000")
        if self.max_queue < max(self.max_batch, self.limits.max_embed_texts):
            raise LmrecError(f"--max-queue: {self.max_queue}, must be at least --max-batch and "
                             f"{self.limits.max_embed_texts} (the most texts one Embed call may carry)")
        if self.snapshot_interval_s <= 0:
            raise LmrecError(f"--snapshot-interval: {self.snapshot_interval_s:g}, must be > 0 seconds")
        if self.grace_s < 0:
            raise LmrecError(f"--grace: {self.grace_s:g}, must be >= 0 seconds")
        if self.threads is not None and self.threads < 1:
            raise LmrecError(f"--threads: {self.threads}, must be >= 1")
        if self.compute_slots is not None and self.compute_slots < 1:
            raise LmrecError(f"--compute-slots: {self.compute_slots}, must be >= 1")
        if self.max_waiting_calls < 0:
            raise LmrecError(f"--max-waiting-calls: {self.max_waiting_calls}, must be >= 0")
        if self.workers < 1:
            raise LmrecError(f"--workers: {self.workers}, must be >= 1")
        if self.max_concurrent_rpcs < 1:
            raise LmrecError(f"--max-concurrent-rpcs: {self.max_concurrent_rpcs}, must be >= 1")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class RecommenderServer:
    """One gRPC server over one bundle and state directory. `start()`, then `stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics() if config.metrics_port is not None else None
        self.budget = ThreadBudget.plan(_device(config.device), config.threads, config.workers,
                                        config.max_concurrent_rpcs, config.compute_slots)
        self.plane = DataPlane(max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000,
                               max_queue=config.max_queue,
                               on_batch=self.metrics.batch_size.observe if self.metrics else None,
                               batch_workers=self.budget.batch_workers, compute_slots=self.budget.compute_slots,
                               max_waiting=config.max_waiting_calls)
        self.batcher = self.plane.batcher
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.load_error: BaseException | None = None
        self._loaded = threading.Event()
        self._stopping = threading.Event()
        self._swap_lock = threading.Lock()
        self._grpc: grpc.Server | None = None

    # -- pieces --------------------------------------------------------------------------------
    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _load(self) -> Recommender:
        c = self.config
        # Resolved, so that a reload behind a symlink can still find the bundle it replaces.
        bundle = Path(c.bundle).resolve()
        started = time.perf_counter()
        rec = Recommender.load(bundle, device=c.device, precision=c.precision, threads=self.budget.onnx_threads,
                               state_dir=c.state_dir)
        log.info("loaded %s: %d items, %s/%s (%s), in %.1f s", bundle, len(rec), rec.device, rec.precision,
                 rec.precision_reason, time.perf_counter() - started)
        return rec

    def _load_in_background(self) -> None:
        try:
            rec = self._load()
        except BaseException as e:  # noqa: BLE001 - reported through load_error and the CLI
            self.load_error = e
            log.error("cannot load %s: %s", self.config.bundle, e)
        else:
            if self._stopping.is_set():
                rec.close()
            else:
                self.plane.install(rec)
                self._set_health(health_pb2.HealthCheckResponse.SERVING)
        finally:
            self._loaded.set()

    def _snapshot_loop(self) -> None:
        while not self._stopping.wait(self.config.snapshot_interval_s):
            self.snapshot()

    # -- public --------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind and start serving health (NOT_SERVING); the bundle loads in the background.

        Returns the bound port (useful with port 0).
        """
        c = self.config
        self.budget.apply()
        log.info("thread budget: %s", self.budget.describe())
        interceptors: list[grpc.ServerInterceptor] = []
        if self.metrics is not None:
            self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
            self.metrics.catalogue_size.set_function(lambda: len(self.plane.current or ()))
            interceptors.append(MetricsInterceptor(self.metrics))
        if c.auth is not None:
            interceptors.append(AuthInterceptor(c.auth, write_methods()))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="lmrec-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", c.limits.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
            ],
            maximum_concurrent_rpcs=c.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers((generic_handler(RecommenderServicer(self.plane, c.limits)),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = _address(c.host, c.port)
        try:
            if c.tls_cert is not None and c.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(Path(c.tls_key).read_bytes(), Path(c.tls_cert).read_bytes())]
                )
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except (RuntimeError, OSError) as e:
            raise LmrecError(f"cannot listen on {address}: {e}") from None
        if not self.port:
            raise LmrecError(f"cannot listen on {address} (in use, or not an address of this host)")
        if c.host not in LOOPBACK_HOSTS:
            if c.auth is None:
                log.warning("listening on %s without --token/--token-file: anyone who can reach it can write", c.host)
            if c.tls_cert is None:
                log.warning("listening on %s without TLS: traffic and tokens travel in clear text", c.host)
        server.start()
        self._grpc = server
        if self.metrics is not None and c.metrics_port is not None:
            self.metrics_port = self.metrics.serve(c.host, c.metrics_port)
        for target in (self._load_in_background, self._snapshot_loop):
            threading.Thread(target=target, name=f"lmrec-{target.__name__.strip('_')}", daemon=True).start()
        return self.port

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        """True once the bundle is loaded; raises the load error if loading failed."""
        if not self._loaded.wait(timeout):
            return False
        if self.load_error is not None:
            raise self.load_error
        return True

    def snapshot(self) -> bool:
        """Snapshot the state directory if anything was written since the last one."""
        rec = self.plane.current
        if rec is None or not rec.pending_changes:
            return False
        started = time.perf_counter()
        try:
            rec.snapshot()
        except Exception:  # noqa: BLE001 - the log still holds every write; retry next time
            log.exception("snapshot failed (writes stay in the log)")
            return False
        log.info("snapshot written in %.2f s", time.perf_counter() - started)
        return True

    def reload(self) -> bool:
        """Reread the token file and swap to the bundle now at the configured path.

        Writes wait while the new bundle loads; reads keep being answered by the old one until the
        swap, and calls in flight finish on it. The changes made through the server are carried
        onto the new bundle (`Recommender.reopen`). A bundle that fails to load leaves the old one
        serving with its state. Returns whether the bundle was swapped.
        """
        if self.config.auth is not None:
            try:
                self.config.auth.reload()
            except LmrecError as e:
                log.error("token file not reloaded, keeping the old tokens: %s", e)
        with self._swap_lock:
            old = self.plane.current
            if old is None:
                log.warning("reload ignored: the bundle is still loading")
                return False
            target = Path(self.config.bundle).resolve()
            try:
                manifest = Manifest.loads((target / Manifest.MANIFEST).read_bytes(), str(target))
            except (OSError, LmrecError) as e:
                log.error("reload: cannot read the bundle's manifest (%s); still serving the old bundle", e)
                return False
            if manifest == old.manifest:
                log.info("reload: the bundle is unchanged")
                return False
            try:
                new = self.plane.swap(target)
            except Exception as e:  # noqa: BLE001 - the old bundle and its state keep serving
                log.error("reload: cannot serve %s (%s); still serving the old bundle", target, e)
                return False
        log.info("now serving %s (%d items)", new.bundle.path, len(new))
        return True

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within `grace`, final snapshot."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            self._grpc.stop(self.config.grace_s if grace is None else grace).wait()
        self.plane.close(timeout=self.config.grace_s)
        self._loaded.wait(self.config.grace_s)
        with self._swap_lock, self.plane.exclusive():
            rec = self.plane.install(None)
            if rec is not None:
                started = time.perf_counter()
                written = rec.snapshot()
                rec.close()
                if written is not None:
                    log.info("final snapshot written in %.2f s", time.perf_counter() - started)
        if self.metrics is not None:
            self.metrics.close()
        self.budget.restore()


def _device(device: str) -> str:
    """The device "auto" will pick (the thread budget depends on it)."""
    if device != "auto":
        return device
    try:
        return "cuda" if cuda_available() else "cpu"
    except MissingDependencyError:
        return "cpu"  # loading the bundle reports the missing runtime


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT (graceful stop); SIGHUP reloads. For `lmrec serve`."""
    server = RecommenderServer(config)
    wake = threading.Event()
    pending: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        pending.append(signum)
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    port = server.start()
    scheme = "tls" if config.tls_cert else "plaintext"
    log.info("listening on %s (%s)", _address(config.host, port), scheme)
    if server.metrics_port is not None:
        log.info("metrics on http://%s/metrics", _address(config.host, server.metrics_port))
    try:
        while True:
            wake.wait(0.5)
            wake.clear()
            if server.load_error is not None:
                raise LmrecError(f"cannot load the bundle: {server.load_error}") from server.load_error
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGHUP:
                    server.reload()
                else:
                    log.info("%s: stopping (grace %.0f s)", signal.Signals(signum).name, config.grace_s)
                    server.stop()
                    log.info("stopped")
                    return 0
    finally:
        server.stop(0)
