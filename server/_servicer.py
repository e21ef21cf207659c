"""The lmrec.v1.Recommender service: request → data plane call → response, nothing else.

Each method checks the message against the contract's limits (lmrec.server._convert names the
proto field), calls the transport-neutral `DataPlane`, and converts the result; the rules of
recommending live in the SDK, and exceptions become status codes in lmrec.server._handlers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import lmrec

from . import _convert as cv
from ._dataplane import DataPlane
from ._handlers import Undecodable
from ._limits import DEFAULT_STREAM_CHUNK, MAX_STREAM_CHUNK, Limits
from .v1 import recommender_pb2 as pb

_NO_DEADLINE = 1e6  # grpc reports an absent deadline as a huge time_remaining()


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE else remaining


class RecommenderServicer:
    """Implements every RPC of lmrec.v1.Recommender over a `DataPlane`."""

    def __init__(self, plane: DataPlane, limits: Limits) -> None:
        self._plane = plane
        self._limits = limits

    # -- reads -------------------------------------------------------------------------------
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        texts = cv.texts("texts", request.texts, self._limits.max_embed_texts, self._limits)
        vectors = self._plane.embed(texts, _timeout(context))
        return pb.EmbedResponse(vectors=cv.vectors_out(vectors), dim=vectors.shape[1], offset=0)

    def EmbedStream(self, request: pb.EmbedStreamRequest, context: grpc.ServicerContext) -> Iterator[pb.EmbedResponse]:
        texts = cv.texts("texts", request.texts, self._limits.max_embed_stream_texts, self._limits)
        chunk = request.chunk_size or DEFAULT_STREAM_CHUNK
        if not 1 <= chunk <= MAX_STREAM_CHUNK:
            raise cv.InvalidField(f"chunk_size: {chunk}, must be between 1 and {MAX_STREAM_CHUNK}")
        for start in range(0, len(texts), chunk):
            if not context.is_active():
                return  # the client went away: stop embedding for it
            vectors = self._plane.embed(texts[start:start + chunk], _timeout(context))
            yield pb.EmbedResponse(vectors=cv.vectors_out(vectors), dim=vectors.shape[1], offset=start)

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        limits = self._limits
        history = cv.item_ids("history", request.history, limits)
        positive = cv.item_ids("positive", request.positive, limits)
        negative = cv.item_ids("negative", request.negative, limits)
        exclude = cv.item_ids("exclude", request.exclude, limits)
        user_vector = cv.vector("user_vector", request.user_vector, self._plane.recommender.dim) \
            if request.user_vector else None
        k = cv.k(request, limits)
        filter_ = cv.filter_(request.filter, limits)
        # Repeated fields cannot be absent, only empty: a request with neither a vector nor examples
        # is a history request, an empty one included (the SDK then answers with popular items).
        other_basis = user_vector is not None or bool(positive or negative)
        results = self._plane.recommend(
            history=(history or None) if other_basis else history, k=k, exclude=exclude or None, filter=filter_,
            explain=request.explain, user_vector=user_vector, positive=positive or None,
            negative=negative or None, strict=request.strict, timeout=_timeout(context))
        return pb.RecommendResponse(items=cv.scored(results, request.explain), unknown_ids=list(results.unknown_ids))

    def EmbedUser(self, request: pb.EmbedUserRequest, context: grpc.ServicerContext) -> pb.EmbedUserResponse:
        history = cv.item_ids("history", request.history, self._limits)
        vectors = cv.vector_list("history_vectors", request.history_vectors, self._plane.recommender.dim,
                                 self._limits)
        if bool(history) == (vectors is not None):
            raise cv.InvalidField("history: give exactly one of history (ids) or history_vectors")
        vector, unknown = self._plane.embed_user(history or None, vectors, request.strict, _timeout(context))
        return pb.EmbedUserResponse(vector=pb.Vector(values=vector.tolist()), unknown_ids=unknown)

    def SimilarItems(self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext) -> pb.SimilarItemsResponse:
        item = cv.item_id("id", request.id, self._limits)
        results = self._plane.similar_items(item, cv.k(request, self._limits), cv.filter_(request.filter, self._limits),
                                            _timeout(context))
        return pb.SimilarItemsResponse(items=cv.scored(results))

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        query = cv.text("text", request.text, self._limits)
        k, filter_ = cv.k(request, self._limits), cv.filter_(request.filter, self._limits)
        return pb.SearchResponse(items=cv.scored(self._plane.search(query, k, filter_, _timeout(context))))

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.GetItemResponse:
        item = self._plane.get_item(cv.item_id("id", request.id, self._limits))
        return pb.GetItemResponse(item=cv.item_out(item, request.include_vector))

    def GetItems(self, request: pb.GetItemsRequest, context: grpc.ServicerContext) -> pb.GetItemsResponse:
        items, missing = self._plane.get_items(cv.item_ids("ids", request.ids, self._limits, required=True))
        return pb.GetItemsResponse(items=[cv.item_out(i, request.include_vector) for i in items], missing=missing)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        rec = self._plane.recommender
        return pb.GetModelInfoResponse(
            model=rec.manifest.base_model or "", dim=rec.dim, max_length=rec.manifest.max_length, device=rec.device,
            precision=rec.precision, catalogue_size=len(rec), lmrec_version=lmrec.__version__,
            limits=pb.Limits(**vars(self._limits)), precision_reason=rec.precision_reason,
            text_weight=rec.manifest.text_weight, centred_text_weight=rec.manifest.centred_text_weight)

    # -- writes ------------------------------------------------------------------------------
    def _upsert(self, request: pb.UpsertItemsRequest, where: str) -> tuple[int, int]:
        ids, texts, vectors, metas = cv.upsert_items(request, where, self._limits, self._plane.recommender.dim)
        return len(ids), self._plane.upsert(ids, texts, vectors, metas)

    def UpsertItems(self, request: pb.UpsertItemsRequest, context: grpc.ServicerContext) -> pb.UpsertItemsResponse:
        upserted, size = self._upsert(request, "")
        return pb.UpsertItemsResponse(upserted=upserted, catalogue_size=size)

    def UpsertItemsStream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> pb.UpsertItemsResponse:
        total, size = 0, len(self._plane.recommender)
        for n, request in enumerate(requests):
            if isinstance(request, Undecodable):
                raise cv.InvalidField(f"message {n}: {request.message}")
            upserted, size = self._upsert(request, f"message {n}: ")
            total += upserted
        return pb.UpsertItemsResponse(upserted=total, catalogue_size=size)

    def DeleteItems(self, request: pb.DeleteItemsRequest, context: grpc.ServicerContext) -> pb.DeleteItemsResponse:
        ids = list(dict.fromkeys(cv.item_ids("ids", request.ids, self._limits, required=True)))
        deleted, missing, size = self._plane.delete(ids)
        return pb.DeleteItemsResponse(deleted=deleted, missing=missing, catalogue_size=size)


__all__ = ["RecommenderServicer"]
