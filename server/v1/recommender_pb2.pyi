from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors", "dim", "offset")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    dim: int
    offset: int
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., dim: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("texts", "chunk_size")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    chunk_size: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "equals", "any_of")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    field: str
    equals: _struct_pb2.Value
    any_of: _struct_pb2.ListValue
    def __init__(self, field: _Optional[str] = ..., equals: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., any_of: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("id", "score", "because")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    because: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., because: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("history", "user_vector", "positive", "negative", "k", "exclude", "filter", "explain", "strict")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedScalarFieldContainer[str]
    user_vector: _containers.RepeatedScalarFieldContainer[float]
    positive: _containers.RepeatedScalarFieldContainer[str]
    negative: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude: _containers.RepeatedScalarFieldContainer[str]
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    explain: bool
    strict: bool
    def __init__(self, history: _Optional[_Iterable[str]] = ..., user_vector: _Optional[_Iterable[float]] = ..., positive: _Optional[_Iterable[str]] = ..., negative: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude: _Optional[_Iterable[str]] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., explain: _Optional[bool] = ..., strict: _Optional[bool] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "unknown_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    unknown_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., unknown_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedUserRequest(_message.Message):
    __slots__ = ("history", "history_vectors", "strict")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_VECTORS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedScalarFieldContainer[str]
    history_vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    strict: bool
    def __init__(self, history: _Optional[_Iterable[str]] = ..., history_vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., strict: _Optional[bool] = ...) -> None: ...

class EmbedUserResponse(_message.Message):
    __slots__ = ("vector", "unknown_ids")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    unknown_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., unknown_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("id", "k", "filter")
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    k: int
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "k", "filter")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    text: str
    k: int
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, text: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "text", "vector", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("upserted", "catalogue_size")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    catalogue_size: int
    def __init__(self, upserted: _Optional[int] = ..., catalogue_size: _Optional[int] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted", "missing", "catalogue_size")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    catalogue_size: int
    def __init__(self, deleted: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ..., catalogue_size: _Optional[int] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id", "include_vector")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_vector: bool
    def __init__(self, id: _Optional[str] = ..., include_vector: _Optional[bool] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("ids", "include_vector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vector: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., include_vector: _Optional[bool] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items", "missing")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_embed_texts", "max_embed_stream_texts", "max_text_bytes", "max_k", "max_ids", "max_id_bytes", "max_upsert_items", "max_metadata_bytes", "max_filter_conditions", "max_filter_values", "max_message_bytes")
    MAX_EMBED_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_EMBED_STREAM_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPSERT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_embed_texts: int
    max_embed_stream_texts: int
    max_text_bytes: int
    max_k: int
    max_ids: int
    max_id_bytes: int
    max_upsert_items: int
    max_metadata_bytes: int
    max_filter_conditions: int
    max_filter_values: int
    max_message_bytes: int
    def __init__(self, max_embed_texts: _Optional[int] = ..., max_embed_stream_texts: _Optional[int] = ..., max_text_bytes: _Optional[int] = ..., max_k: _Optional[int] = ..., max_ids: _Optional[int] = ..., max_id_bytes: _Optional[int] = ..., max_upsert_items: _Optional[int] = ..., max_metadata_bytes: _Optional[int] = ..., max_filter_conditions: _Optional[int] = ..., max_filter_values: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "dim", "max_length", "device", "precision", "catalogue_size", "lmrec_version", "limits", "precision_reason", "text_weight", "centred_text_weight")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LMREC_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CENTRED_TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    dim: int
    max_length: int
    device: str
    precision: str
    catalogue_size: int
    lmrec_version: str
    limits: Limits
    precision_reason: str
    text_weight: float
    centred_text_weight: float
    def __init__(self, model: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., catalogue_size: _Optional[int] = ..., lmrec_version: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., precision_reason: _Optional[str] = ..., text_weight: _Optional[float] = ..., centred_text_weight: _Optional[float] = ...) -> None: ...
