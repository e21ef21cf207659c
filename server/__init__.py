"""gRPC server for lmrec (extra `server`: grpcio, protobuf, health checking, reflection).

`lmrec serve` runs `serve(ServerConfig(...))`; tests and embedders use `RecommenderServer`
directly. The contract is `protos/lmrec/v1/recommender.proto`; its generated Python code is
`lmrec.server.v1` (regenerate with `python -m lmrec.server.codegen`). Layers, as in MLServer:
the server (lifecycle, interceptors) → the servicer (messages ↔ values) → the transport-neutral
`DataPlane` (which Recommender answers, micro-batching) → the SDK.
"""

from __future__ import annotations

from . import _client
from ._admission import ComputeGate, TooBusy
from ._batching import BatcherClosed, DeadlineExpired, MicroBatcher, QueueFull
from ._bench import Usage, bench_server, closed_loop, format_server_bench, open_loop, percentile_ms
from ._client import *  # noqa: F403  (the client: RecommenderClient and its errors, also as lmrec.client)
from ._dataplane import DataPlane, NotReady
from ._handlers import write_methods
from ._interceptors import TokenAuth, TokenError
from ._limits import Limits
from ._server import RecommenderServer, ServerConfig, serve
from ._threads import BlasLimit, ThreadBudget, cores

__all__ = [
    "RecommenderServer", "ServerConfig", "serve", "DataPlane", "NotReady", "TokenAuth", "TokenError", "Limits",
    "MicroBatcher", "QueueFull", "DeadlineExpired", "BatcherClosed", "write_methods", "bench_server",
    "format_server_bench", "ThreadBudget", "BlasLimit", "cores",
    "ComputeGate", "TooBusy", "open_loop", "closed_loop", "Usage", "percentile_ms",
]
__all__ += _client.__all__
