"""Server interceptors: bearer-token auth with read/write scopes, and Prometheus metrics.

Token file format (`lmrec serve --token-file PATH`), one token per line, `#` starts a comment:

    # scope  token
    read     3f1c9e0a8b7d4c2e91f0a6b5d4c3e2f1
    write    9a8b7c6d5e4f30211f2e3d4c5b6a7980

`read` tokens may call the methods the proto marks NO_SIDE_EFFECTS; `write` tokens may call every
method. Tokens are at least 16 characters without whitespace. The file is reread on SIGHUP.
Health checks need no token (load balancers and orchestrators probe without one).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from lmrec import LmrecError

SCOPES = ("read", "write")
MIN_TOKEN_CHARS = 16
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenError(LmrecError, ValueError):
    """A token or token file is malformed; the message names the file and line."""


class TokenAuth:
    """Maps tokens to scopes; thread-safe and reloadable from its file."""

    def __init__(self, tokens: dict[str, str], path: Path | None = None) -> None:
        self._tokens = dict(tokens)
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def single(cls, token: str) -> TokenAuth:
        """One read-write token (`lmrec serve --token`)."""
        _check_token(token, "--token")
        return cls({token: "write"})

    @classmethod
    def from_file(cls, path: str | Path) -> TokenAuth:
        path = Path(path)
        return cls(_parse_token_file(path), path)

    def reload(self) -> None:
        """Reread the token file (no-op for a single token); a bad file keeps the old tokens."""
        if self._path is not None:
            tokens = _parse_token_file(self._path)
            with self._lock:
                self._tokens = tokens

    def scope(self, token: str | None) -> str | None:
        """The token's scope, or None when unknown. Compares in constant time."""
        if not token:
            return None
        with self._lock:
            items = list(self._tokens.items())
        found = None
        for known, scope in items:
            if hmac.compare_digest(known.encode(), token.encode()):
                found = scope
        return found


def _check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters and no whitespace")


def _parse_token_file(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"token file {path}: {e}") from e
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SCOPES:
            raise TokenError(f"{where}: expected 'read TOKEN' or 'write TOKEN'")
        scope, token = parts
        _check_token(token, where)
        if token in tokens:
            raise TokenError(f"{where}: token listed twice")
        tokens[token] = scope
    if not tokens:
        raise TokenError(f"token file {path}: no tokens (lines 'read TOKEN' or 'write TOKEN')")
    return tokens


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return None


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers `code` without running anything."""

    def abort(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    kind = _kind(handler)
    return handler._replace(**{kind: abort})


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


class AuthInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED without a known token; PERMISSION_DENIED for a read token on a write method."""

    def __init__(self, auth: TokenAuth, write_methods: set[str]) -> None:
        self._auth = auth
        self._write_methods = write_methods

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        scope = self._auth.scope(_bearer(details.invocation_metadata))
        if scope is None:
            return _rejecting(
                handler, grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown token: send metadata 'authorization: Bearer <token>'",
            )
        if details.method in self._write_methods and scope != "write":
            return _rejecting(
                handler, grpc.StatusCode.PERMISSION_DENIED,
                f"{details.method} writes: it needs a read-write token, this one is read-only",
            )
        return handler


class Metrics:
    """Prometheus metrics in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmrec_requests", "RPCs finished, by method and status code", ["method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "lmrec_request_seconds", "RPC latency by method", ["method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "lmrec_embed_batch_texts", "texts per model run of the micro-batcher", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        )
        self.queue_depth = Gauge("lmrec_embed_queue_texts", "texts waiting for the model", registry=self.registry)
        self.catalogue_size = Gauge("lmrec_catalogue_items", "items in the catalogue", registry=self.registry)
        self._http: Any = None

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port."""
        from prometheus_client import start_http_server

        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status code, and times it (streams until their end)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        method = details.method
        kind = _kind(handler)
        behaviour = getattr(handler, kind)
        metrics = self._metrics

        def finish(context: grpc.ServicerContext, start: float, error: BaseException | None) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
            metrics.requests.labels(method, code.name).inc()
            metrics.latency.labels(method).observe(time.perf_counter() - start)

        def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                yield from behaviour(request, context)
            except BaseException as e:
                finish(context, start, e)
                raise
            finish(context, start, None)

        def answered(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                response = behaviour(request, context)
            except BaseException as e:
                finish(context, start, e)
                raise
            finish(context, start, None)
            return response

        return handler._replace(**{kind: streamed if handler.response_streaming else answered})
