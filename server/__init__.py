"""gRPC server for lmrec (extra `server`: grpcio, protobuf, health checking, reflection).

`lmrec serve` runs `serve(ServerConfig(...))`; tests and embedders use `RecommenderServer`
directly. The contract is `protos/lmrec/v1/recommender.proto`; its generated Python code lives in
`lmrec.server._gen` (regenerate with `python -m lmrec.server.codegen`).
"""

from __future__ import annotations

from ._batching import DeadlineExpired, MicroBatcher, QueueFull
from ._client import RecommenderClient, RemoteError
from ._interceptors import TokenAuth, TokenError
from ._limits import Limits
from ._server import RecommenderServer, ServerConfig, serve

__all__ = [
    "RecommenderServer", "ServerConfig", "serve", "TokenAuth", "TokenError", "Limits",
    "MicroBatcher", "QueueFull", "DeadlineExpired", "RecommenderClient", "RemoteError",
]
