"""gRPC server for lmrec (extra `server`: grpcio, protobuf, health checking, reflection)."""

from __future__ import annotations
