"""`from lmrec.client import RecommenderClient`: talk to `lmrec serve` over gRPC (extra `server`).

The client's code lives in `lmrec.server` next to the generated protobuf modules it needs; this
module only points there, importing it on first use, so `lmrec` itself never imports grpc and a
bare SDK install gets a clear MissingDependencyError instead of an ImportError from deep inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import require

if TYPE_CHECKING:
    from lmrec.server import (
        DeleteResult,
        RecommenderClient,
        RemoteError,
        RemoteInvalidArgument,
        RemoteNotFound,
        retry_service_config,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in ("grpc", "google.protobuf", "grpc_health"):
            require(module, "server", "lmrec.client")
        import lmrec.server

        return getattr(lmrec.server, name)
    raise AttributeError(f"module 'lmrec.client' has no attribute {name!r}")


__all__ = ["RecommenderClient", "DeleteResult", "RemoteError", "RemoteInvalidArgument", "RemoteNotFound",
           "retry_service_config"]
