"""`RecommenderClient`: the SDK's method names and result types over gRPC, with deadlines and retries.

Every call has a deadline (`timeout`, default 10 s, overridable per call). Idempotent calls (all of
v1's: the proto marks reads NO_SIDE_EFFECTS and upserts/deletes IDEMPOTENT) are retried by grpc's
own retry machinery on UNAVAILABLE, with exponential backoff, within that deadline. Server errors
come back as the SDK's exception families: INVALID_ARGUMENT as a ValueError, NOT_FOUND as a
KeyError, both subclasses of `RemoteError` carrying the status code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmrec import ExplainedRecommendation, Item, LmrecError, Recommendation

from ._convert import metadata_out, plain
from .v1 import recommender_pb2 as pb
from .v1 import recommender_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"]


class RemoteError(LmrecError):
    """The server answered with an error status; `.code` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class RemoteInvalidArgument(RemoteError, ValueError):
    """INVALID_ARGUMENT: a request field broke the contract (the message names it)."""


class RemoteNotFound(RemoteError, KeyError):
    """NOT_FOUND: an item id the server does not have."""


def _remote_error(error: grpc.RpcError) -> RemoteError:
    code, details = error.code(), error.details() or ""
    cls = {grpc.StatusCode.INVALID_ARGUMENT: RemoteInvalidArgument, grpc.StatusCode.NOT_FOUND: RemoteNotFound}
    return cls.get(code, RemoteError)(code, details)


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    missing: list[str]
    catalogue_size: int


def retry_service_config(max_attempts: int = 4) -> str:
    """grpc service config retrying every idempotent method of the service on UNAVAILABLE."""
    safe = {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
    names = [{"service": SERVICE.full_name, "method": m.name} for m in SERVICE.methods
             if m.GetOptions().idempotency_level in safe]
    return json.dumps({"methodConfig": [{
        "name": names,
        "retryPolicy": {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]})


def _conditions(filter: Mapping[str, Any] | None) -> list[pb.Condition]:
    """{field: value} -> equals, {field: [values]} -> any_of (the SDK's filter dict)."""
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise ValueError("filter: over gRPC only metadata conditions {field: value or [values]} work, not callables")
    out = []
    for name, value in filter.items():
        if isinstance(value, (list, tuple, set)):
            any_of = struct_pb2.ListValue()
            any_of.extend(list(value))
            out.append(pb.Condition(field=name, any_of=any_of))
        else:
            out.append(pb.Condition(field=name, equals=json_format.ParseDict(value, struct_pb2.Value())))
    return out


def _results(items: Iterable[pb.ScoredItem], explain: bool = False) -> list[Any]:
    if explain:
        return [ExplainedRecommendation(it.id, it.score, tuple(it.because)) for it in items]
    return [Recommendation(it.id, it.score) for it in items]


def _read(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class RecommenderClient:
    """A connection to `lmrec serve`. Thread-safe; use as a context manager or call `close()`.

    `address` is host:port. `token` is sent as "authorization: Bearer <token>". `tls=True` uses
    the system's root certificates; `root_cert` (PEM bytes or a path) trusts that certificate
    instead and implies TLS.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_cert: str | bytes | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout: {timeout}, must be > 0 seconds")
        if not 1 <= max_attempts <= 5:
            raise ValueError(f"max_attempts: {max_attempts}, must be 1 (no retries) to 5 (grpc's limit)")
        retries = [("grpc.enable_retries", 1), ("grpc.service_config", retry_service_config(max_attempts))]
        channel_options = [
            *(retries if max_attempts > 1 else [("grpc.enable_retries", 0)]),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *options,
        ]
        if tls or root_cert is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=_read(root_cert))
            self._channel = grpc.secure_channel(address, credentials, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(address, options=channel_options)
        self.stub = pb_grpc.RecommenderStub(self._channel)  # the generated stubs, for raw calls
        self.health_stub = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: Callable, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _remote_error(e) from None

    # -- health ---------------------------------------------------------------------------------
    def health(self, service: str = "", timeout: float | None = None) -> str:
        """"SERVING", "NOT_SERVING", … for the server ("") or one service (e.g. "lmrec.v1.Recommender")."""
        response = self._call(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # -- reads ----------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """float32 (n, dim), L2-normalised; up to 1024 texts per call (see `embed_texts_stream`)."""
        response = self._call(self.stub.Embed, pb.EmbedRequest(texts=list(texts)), timeout)
        return np.array([v.values for v in response.vectors], dtype=np.float32).reshape(-1, response.dim)

    def embed_texts_stream(
        self, texts: Sequence[str], chunk_size: int = 256, timeout: float | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Up to 10000 texts; yields `(offset, vectors)` chunks in input order as they arrive."""
        request = pb.EmbedStreamRequest(texts=list(texts), chunk_size=chunk_size)
        try:
            for response in self.stub.EmbedStream(request, timeout=timeout or self.timeout, metadata=self._metadata):
                vectors = np.array([v.values for v in response.vectors], dtype=np.float32).reshape(-1, response.dim)
                yield response.offset, vectors
        except grpc.RpcError as e:
            raise _remote_error(e) from None

    def recommend(
        self,
        history: Sequence[str] | None = None,
        k: int = 10,
        exclude: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        explain: bool = False,
        user_vector: Sequence[float] | np.ndarray | None = None,
        positive: Sequence[str] | None = None,
        negative: Sequence[str] | None = None,
        strict: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        request = pb.RecommendRequest(
            history=list(history or ()), k=k, exclude=list(exclude or ()), filter=_conditions(filter),
            explain=explain, positive=list(positive or ()), negative=list(negative or ()), strict=strict,
            user_vector=np.asarray(user_vector, dtype=np.float32).ravel().tolist() if user_vector is not None else (),
        )
        return _results(self._call(self.stub.Recommend, request, timeout).items, explain)

    def embed_user(self, history: Sequence[str] | None = None,
                   vectors: Sequence[Sequence[float]] | np.ndarray | None = None, strict: bool = False,
                   timeout: float | None = None) -> np.ndarray:
        """The user vector `recommend(history)` ranks with (see `Recommender.embed_user`): pass it,
        unchanged, as `recommend(user_vector=…)`, e.g. to every shard of a sharded catalogue."""
        rows = [] if vectors is None else [pb.Vector(values=np.asarray(v, dtype=np.float32).tolist()) for v in vectors]
        request = pb.EmbedUserRequest(history=list(history or ()), history_vectors=rows, strict=strict)
        return np.asarray(self._call(self.stub.EmbedUser, request, timeout).vector.values, dtype=np.float32)

    def similar_items(self, item_id: str, k: int = 10, filter: Mapping[str, Any] | None = None,
                      timeout: float | None = None) -> list[Any]:
        request = pb.SimilarItemsRequest(id=item_id, k=k, filter=_conditions(filter))
        return _results(self._call(self.stub.SimilarItems, request, timeout).items)

    def search(self, text: str, k: int = 10, filter: Mapping[str, Any] | None = None,
               timeout: float | None = None) -> list[Any]:
        request = pb.SearchRequest(text=text, k=k, filter=_conditions(filter))
        return _results(self._call(self.stub.Search, request, timeout).items)

    def get_item(self, item_id: str, timeout: float | None = None) -> Item:
        """The item's text (None for a vector-only item), metadata and vector, as the SDK's Item."""
        return _item(self._call(self.stub.GetItem, pb.GetItemRequest(id=item_id, include_vector=True), timeout).item)

    def get_items(self, ids: Sequence[str], missing_ok: bool = False, timeout: float | None = None) -> list[Item]:
        """The items of `ids` in that order, with vectors; RemoteNotFound for an id the server does
        not hold, or with `missing_ok` it is left out (a shard holds only some)."""
        response = self._call(self.stub.GetItems, pb.GetItemsRequest(ids=list(ids), include_vector=True), timeout)
        if response.missing and not missing_ok:
            raise RemoteNotFound(grpc.StatusCode.NOT_FOUND, f"ids: unknown item id {response.missing[0]!r}")
        return [_item(i) for i in response.items]

    def model_info(self, timeout: float | None = None) -> dict[str, Any]:
        """Model, dim, max_length, device, precision, catalogue_size, lmrec_version and limits."""
        response = self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    # -- writes ---------------------------------------------------------------------------------
    def add_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        vectors: Any = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Upsert up to 1000 items; durable on the server when this returns. Returns the catalogue size."""
        items = _items(ids, texts, vectors, metadata)
        return int(self._call(self.stub.UpsertItems, pb.UpsertItemsRequest(items=items), timeout).catalogue_size)

    def add_items_stream(self, batches: Iterable[Mapping[str, Any]], timeout: float | None = None) -> int:
        """Bulk upsert over one client stream. Each batch is a dict with the keyword arguments of
        `add_items` (ids, texts, vectors, metadata), at most 1000 items. Returns items written."""
        requests = (pb.UpsertItemsRequest(items=_items(**batch)) for batch in batches)
        return int(self._call(self.stub.UpsertItemsStream, requests, timeout).upserted)

    def delete_items(self, ids: Sequence[str], timeout: float | None = None) -> DeleteResult:
        """Delete up to 1000 items; ids the server does not have come back in `missing`."""
        response = self._call(self.stub.DeleteItems, pb.DeleteItemsRequest(ids=list(ids)), timeout)
        return DeleteResult(int(response.deleted), list(response.missing), int(response.catalogue_size))


def _item(item: pb.Item) -> Item:
    return Item(item.id, item.text or None, _struct_dict(item.metadata), np.array(item.vector, dtype=np.float32))


def _struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return plain(json_format.MessageToDict(struct))


def _items(
    ids: Sequence[str],
    texts: Sequence[str | None] | None = None,
    vectors: Any = None,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[pb.Item]:
    n = len(ids)
    for name, values in (("texts", texts), ("vectors", vectors), ("metadata", metadata)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name}: {len(values)} entries for {n} ids")
    if texts is None and vectors is None:
        raise ValueError("add_items: give texts, vectors or both")
    array = None if vectors is None else np.asarray(vectors, dtype=np.float32)
    return [
        pb.Item(
            id=ids[i],
            text=(texts[i] or "") if texts is not None else "",
            vector=array[i].tolist() if array is not None else (),
            metadata=metadata_out(metadata[i]) if metadata is not None else None,
        )
        for i in range(n)
    ]


__all__ = ["RecommenderClient", "DeleteResult", "RemoteError", "RemoteInvalidArgument", "RemoteNotFound",
           "retry_service_config"]
