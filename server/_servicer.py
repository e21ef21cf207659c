"""The lmrec.v1.Recommender service: validates each request, calls the SDK, maps errors to codes.

No recommending happens here: every method is a thin call into `lmrec.Recommender`, except that
`Embed`/`Search` texts go through the micro-batcher first so concurrent calls share a model run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator

import grpc
import numpy as np
from google.protobuf.message import DecodeError

import lmrec

from . import _convert as cv
from ._batching import BatcherClosed, DeadlineExpired, MicroBatcher, QueueFull
from ._gen import recommender_pb2 as pb
from ._limits import DEFAULT_STREAM_CHUNK, MAX_STREAM_CHUNK, Limits

log = logging.getLogger("lmrec.server")

SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"]
SERVICE_NAME = SERVICE.full_name
_NO_DEADLINE = 1e6  # grpc reports an absent deadline as a huge time_remaining()


def write_methods() -> set[str]:
    """Full method names that change state: every method the proto does not mark NO_SIDE_EFFECTS."""
    from google.protobuf import descriptor_pb2

    reads = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return {f"/{SERVICE_NAME}/{m.name}" for m in SERVICE.methods if m.GetOptions().idempotency_level != reads}


class NotReady(Exception):
    """No Recommender is loaded yet (or the server is stopping)."""


class Serving:
    """What the service answers from: the current Recommender, swappable while serving.

    Reads take the current Recommender once and finish on it even if a swap happens meanwhile.
    Writes pass through a gate that a swap closes, so no write lands on a Recommender after the
    next one has read the state directory.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._rec: Any = None
        self._gate = threading.Condition()
        self._writers = 0
        self._swapping = False

    @property
    def recommender(self) -> Any:
        """The current Recommender; NotReady (UNAVAILABLE) while none is loaded."""
        rec = self._rec
        if rec is None:
            raise NotReady("the server is loading its bundle (or stopping); retry shortly")
        return rec

    @property
    def current(self) -> Any:
        """The current Recommender, or None."""
        return self._rec

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """The Recommender to write to, held against swaps until the write is durable."""
        with self._gate:
            while self._swapping:
                self._gate.wait()
            self._writers += 1
        try:
            yield self.recommender
        finally:
            with self._gate:
                self._writers -= 1
                self._gate.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """No writes while inside (waits for the running ones): for swaps and the final snapshot."""
        with self._gate:
            while self._swapping:
                self._gate.wait()
            self._swapping = True
            while self._writers:
                self._gate.wait()
        try:
            yield
        finally:
            with self._gate:
                self._swapping = False
                self._gate.notify_all()

    def install(self, rec: Any) -> Any:
        """Make `rec` current; returns the previous one (None at first load)."""
        old, self._rec = self._rec, rec
        return old

    def clear(self) -> Any:
        return self.install(None)


class _Undecodable:
    """Stands in for a request the protobuf runtime rejected, so it becomes INVALID_ARGUMENT."""

    def __init__(self, type_name: str, error: DecodeError) -> None:
        self.message = f"request is not a valid {type_name} message ({error}); strings must be UTF-8"


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as e:
            return _Undecodable(cls.DESCRIPTOR.full_name, e)

    return parse


def _status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
    if isinstance(error, (NotReady, BatcherClosed)):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, KeyError):
        message = str(error) if isinstance(error, lmrec.LmrecError) else f"unknown id {error.args[0]!r}"
        return grpc.StatusCode.NOT_FOUND, message
    if isinstance(error, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, lmrec.LmrecError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    log.exception("internal error", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE else remaining


class RecommenderServicer:
    """Implements every RPC of lmrec.v1.Recommender over a `Serving`."""

    def __init__(self, serving: Serving, batcher: MicroBatcher) -> None:
        self._serving = serving
        self._batcher = batcher
        self._limits = serving.limits

    # -- reads -------------------------------------------------------------------------------
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        texts = cv.texts("texts", request.texts, self._limits.max_embed_texts, self._limits)
        _ = self._serving.recommender  # UNAVAILABLE before the model is loaded, not a queued wait
        vectors, _ = self._batcher.embed(texts, _timeout(context))
        return pb.EmbedResponse(vectors=cv.vectors_out(vectors), dim=vectors.shape[1], offset=0)

    def EmbedStream(self, request: pb.EmbedStreamRequest, context: grpc.ServicerContext) -> Iterator[pb.EmbedResponse]:
        texts = cv.texts("texts", request.texts, self._limits.max_embed_stream_texts, self._limits)
        chunk = request.chunk_size or DEFAULT_STREAM_CHUNK
        if not 1 <= chunk <= MAX_STREAM_CHUNK:
            raise cv.InvalidField(f"chunk_size: {chunk}, must be between 1 and {MAX_STREAM_CHUNK}")
        _ = self._serving.recommender
        for start in range(0, len(texts), chunk):
            if not context.is_active():
                return  # the client went away: stop embedding for it
            vectors, _ = self._batcher.embed(texts[start:start + chunk], _timeout(context))
            yield pb.EmbedResponse(vectors=cv.vectors_out(vectors), dim=vectors.shape[1], offset=start)

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        limits = self._limits
        rec = self._serving.recommender
        history = cv.item_ids("history", request.history, limits)
        positive = cv.item_ids("positive", request.positive, limits)
        negative = cv.item_ids("negative", request.negative, limits)
        exclude = cv.item_ids("exclude", request.exclude, limits)
        user_vector = cv.vector("user_vector", request.user_vector, rec.dim) if request.user_vector else None
        k = cv.k(request, limits)
        filter_ = cv.filter_(request.filter, limits)
        unknown = [h for h in history if h not in rec]
        # A request with no vector and no examples is a history request, even an empty one (the
        # SDK then falls back to popular items); otherwise a history too is the SDK's error.
        other_basis = user_vector is not None or positive or negative
        size = len(rec)
        if not size:
            return pb.RecommendResponse(unknown_ids=unknown)
        results = rec.recommend(
            history=(history or None) if other_basis else history,
            k=min(k, size),
            exclude=exclude or None,
            filter=filter_,
            explain=request.explain,
            user_vector=user_vector,
            positive=positive or None,
            negative=negative or None,
            strict=request.strict,
        )
        return pb.RecommendResponse(items=cv.scored(results, request.explain), unknown_ids=unknown)

    def SimilarItems(self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext) -> pb.SimilarItemsResponse:
        rec = self._serving.recommender
        item = cv.item_id("id", request.id, self._limits)
        k = cv.k(request, self._limits)
        filter_ = cv.filter_(request.filter, self._limits)
        others = len(rec) - 1
        if others < 1:
            rec.get_item(item)  # NOT_FOUND for an unknown id, even in an empty catalogue
            return pb.SimilarItemsResponse()
        return pb.SimilarItemsResponse(items=cv.scored(rec.similar_items(item, k=min(k, others), filter=filter_)))

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        query = cv.text("text", request.text, self._limits)
        k = cv.k(request, self._limits)
        filter_ = cv.filter_(request.filter, self._limits)
        _ = self._serving.recommender
        vectors, rec = self._batcher.embed([query], _timeout(context))
        size = len(rec)
        if not size:
            return pb.SearchResponse()
        # The query's vector, searched like Recommender.search does (no exclusions).
        return pb.SearchResponse(items=cv.scored(rec.recommend(user_vector=vectors[0], k=min(k, size), filter=filter_)))

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.GetItemResponse:
        rec = self._serving.recommender
        item = rec.get_item(cv.item_id("id", request.id, self._limits))
        out = pb.Item(id=item.item_id, text=item.text or "", metadata=cv.metadata_out(item.metadata))
        if request.include_vector:
            out.vector.extend(item.vector.tolist())
        return pb.GetItemResponse(item=out)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        rec = self._serving.recommender
        manifest = rec.manifest
        return pb.GetModelInfoResponse(
            model=str(manifest.get("base_model") or ""),
            dim=rec.dim,
            max_length=int(manifest.get("max_length") or 0),
            device=rec.device,
            precision=rec.precision,
            catalogue_size=len(rec),
            lmrec_version=lmrec.__version__,
            limits=pb.Limits(**vars(self._limits)),
        )

    # -- writes ------------------------------------------------------------------------------
    def _upsert(self, request: pb.UpsertItemsRequest, where: str) -> tuple[int, int]:
        limits = self._limits
        items = request.items
        if not 1 <= len(items) <= limits.max_upsert_items:
            raise cv.InvalidField(f"{where}items: {len(items)} items, must be 1 to {limits.max_upsert_items}")
        ids, texts, vectors, metas = [], [], [], []
        seen: set[str] = set()
        with self._serving.writing() as rec:
            for i, item in enumerate(items):
                field = f"{where}items[{i}]"
                ident = cv.item_id(f"{field}.id", item.id, limits)
                if ident in seen:
                    raise cv.InvalidField(f"{field}.id: {ident!r} appears twice in one request")
                seen.add(ident)
                if not item.text and not item.vector:
                    raise cv.InvalidField(f"{field}: needs text or vector")
                ids.append(ident)
                texts.append(cv.text(f"{field}.text", item.text, limits) if item.text else None)
                vectors.append(cv.vector(f"{field}.vector", item.vector, rec.dim) if item.vector else None)
                metas.append(cv.metadata_in(f"{field}.metadata", item.metadata, limits))
            missing = [i for i, v in enumerate(vectors) if v is None]
            if len(missing) < len(ids):  # some vectors given: embed the rest so it is one write
                if missing:
                    embedded = rec.embed_texts([texts[i] for i in missing])
                    for row, i in zip(embedded, missing):
                        vectors[i] = row
                rec.add_items(ids, texts=texts, vectors=np.stack(vectors), metadata=metas)
            else:
                rec.add_items(ids, texts=texts, metadata=metas)
            return len(ids), len(rec)

    def UpsertItems(self, request: pb.UpsertItemsRequest, context: grpc.ServicerContext) -> pb.UpsertItemsResponse:
        upserted, size = self._upsert(request, "")
        return pb.UpsertItemsResponse(upserted=upserted, catalogue_size=size)

    def UpsertItemsStream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> pb.UpsertItemsResponse:
        total, size = 0, len(self._serving.recommender)
        for n, request in enumerate(requests):
            if isinstance(request, _Undecodable):
                raise cv.InvalidField(f"message {n}: {request.message}")
            upserted, size = self._upsert(request, f"message {n}: ")
            total += upserted
        return pb.UpsertItemsResponse(upserted=total, catalogue_size=size)

    def DeleteItems(self, request: pb.DeleteItemsRequest, context: grpc.ServicerContext) -> pb.DeleteItemsResponse:
        ids = list(dict.fromkeys(cv.item_ids("ids", request.ids, self._limits, required=True)))
        with self._serving.writing() as rec:
            # The SDK refuses a delete naming any unknown id; a concurrent delete can win the race
            # between this check and the call, so check again until the set is stable.
            for attempt in range(3):
                present = [i for i in ids if i in rec]
                if not present:
                    break
                try:
                    rec.delete_items(present)
                    break
                except KeyError:
                    if attempt == 2:
                        raise
            gone = set(present)
            return pb.DeleteItemsResponse(
                deleted=len(present), missing=[i for i in ids if i not in gone], catalogue_size=len(rec)
            )


def _wrap(method: Callable, kind: str) -> Callable:
    """Decode check + exception-to-status mapping around one servicer method."""

    def check(request: Any, context: grpc.ServicerContext) -> None:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

    if kind == "unary_stream":

        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            check(request, context)
            try:
                yield from method(request, context)
            except Exception as e:
                if context.code() is not None:  # already aborted
                    raise
                context.abort(*_status(e))

    else:

        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            if kind == "unary_unary":
                check(request, context)
            try:
                return method(request, context)
            except Exception as e:
                if context.code() is not None:
                    raise
                context.abort(*_status(e))

    return handler


def generic_handler(servicer: RecommenderServicer) -> grpc.GenericRpcHandler:
    """Handlers for every method of the service, built from its descriptor.

    Like the generated add_RecommenderServicer_to_server, but undecodable requests (e.g. invalid
    UTF-8 in a string) become INVALID_ARGUMENT instead of grpc's generic INTERNAL.
    """
    factories = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    handlers = {}
    for method in SERVICE.methods:
        kind, factory = factories[(method.client_streaming, method.server_streaming)]
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = factory(
            _wrap(getattr(servicer, method.name), kind),
            request_deserializer=_deserializer(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
