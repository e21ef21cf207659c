"""The bad-input battery: every malformed request gets the right status naming the field, and the
server stays healthy and correct afterwards."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from _grpc_fixtures import tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from google.protobuf import struct_pb2
from lmrec.server import RecommenderServer
from lmrec.server.v1 import recommender_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MB = 1024 * 1024


def _struct(**fields: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def _cond(field: str, **test: Any) -> pb.Condition:
    return pb.Condition(field=field, **test)


NAN_VECTOR = [float("nan")] + [0.1] * 15
CASES = [
    # (method, request, status, words the message must contain)
    ("Embed", pb.EmbedRequest(), INVALID, ["texts", "at least 1"]),
    ("Embed", pb.EmbedRequest(texts=[""]), INVALID, ["texts[0]", "empty"]),
    ("Embed", pb.EmbedRequest(texts=["ok", "x" * MB]), INVALID, ["texts[1]", "1048576 bytes", "16384"]),
    ("Embed", pb.EmbedRequest(texts=["pen"] * 100_000), INVALID, ["texts", "100000 texts", "1024"]),
    ("EmbedStream", pb.EmbedStreamRequest(texts=["pen"] * 100_000), INVALID, ["texts", "10000"]),
    ("EmbedStream", pb.EmbedStreamRequest(texts=["pen"], chunk_size=5000), INVALID, ["chunk_size", "1024"]),
    ("Search", pb.SearchRequest(text="pen", k=0), INVALID, ["k", "0", "1000"]),
    ("Search", pb.SearchRequest(text="pen", k=10**9), INVALID, ["k", "1000000000", "1000"]),
    ("Recommend", pb.RecommendRequest(history=["office-0"], k=-5), INVALID, ["k", "-5"]),
    ("SimilarItems", pb.SimilarItemsRequest(id="office-0", k=10**9), INVALID, ["k"]),
    ("Search", pb.SearchRequest(text=""), INVALID, ["text", "empty"]),
    ("Recommend", pb.RecommendRequest(user_vector=NAN_VECTOR), INVALID, ["user_vector", "finite"]),
    ("Recommend", pb.RecommendRequest(user_vector=[0.5] * 384), INVALID, ["user_vector", "384", "16"]),
    ("Recommend", pb.RecommendRequest(history=["office-0"], user_vector=[0.5] * 16), INVALID, ["exactly one"]),
    ("Recommend", pb.RecommendRequest(negative=["office-0"]), INVALID, ["negative", "positive"]),
    ("Recommend", pb.RecommendRequest(history=["x"] * 1001), INVALID, ["history", "1001", "1000"]),
    ("Recommend", pb.RecommendRequest(history=["a" * 300]), INVALID, ["history[0]", "256"]),
    ("Recommend", pb.RecommendRequest(positive=["no-such-item"]), NOT_FOUND, ["no-such-item"]),
    ("Recommend", pb.RecommendRequest(history=["no-such-item"], strict=True), NOT_FOUND, ["no-such-item"]),
    ("EmbedUser", pb.EmbedUserRequest(), INVALID, ["history", "exactly one"]),
    ("EmbedUser", pb.EmbedUserRequest(history=["office-0"], history_vectors=[pb.Vector(values=[0.5] * 16)]),
     INVALID, ["history", "exactly one"]),
    ("EmbedUser", pb.EmbedUserRequest(history_vectors=[pb.Vector(values=[0.5] * 384)]), INVALID,
     ["history_vectors[0]", "384", "16"]),
    ("EmbedUser", pb.EmbedUserRequest(history_vectors=[pb.Vector(values=[0.5] * 16), pb.Vector(values=NAN_VECTOR)]),
     INVALID, ["history_vectors[1]", "finite"]),
    ("EmbedUser", pb.EmbedUserRequest(history_vectors=[pb.Vector(values=[0.0] * 16)]), INVALID,
     ["history_vectors[0]", "zeros"]),
    ("EmbedUser", pb.EmbedUserRequest(history_vectors=[pb.Vector(values=[0.5] * 16)] * 1001), INVALID,
     ["history_vectors", "1001", "1000"]),
    ("EmbedUser", pb.EmbedUserRequest(history=["x"] * 1001), INVALID, ["history", "1001", "1000"]),
    ("EmbedUser", pb.EmbedUserRequest(history=["no-such-item"]), NOT_FOUND, ["history", "none"]),
    ("EmbedUser", pb.EmbedUserRequest(history=["office-0", "no-such-item"], strict=True), NOT_FOUND,
     ["no-such-item"]),
    ("SimilarItems", pb.SimilarItemsRequest(id="no-such-item"), NOT_FOUND, ["no-such-item"]),
    ("SimilarItems", pb.SimilarItemsRequest(id=""), INVALID, ["id", "empty"]),
    ("GetItem", pb.GetItemRequest(id="no-such-item"), NOT_FOUND, ["no-such-item"]),
    ("GetItems", pb.GetItemsRequest(), INVALID, ["ids", "at least 1"]),
    ("GetItems", pb.GetItemsRequest(ids=["x"] * 1001), INVALID, ["ids", "1001", "1000"]),
    ("GetItems", pb.GetItemsRequest(ids=["office-0", ""]), INVALID, ["ids[1]", "empty"]),
    # malformed filters
    (
        "Search",
        pb.SearchRequest(text="pen", filter=[pb.Condition(field="brand")]),
        INVALID,
        ["filter[0]", "equals or any_of"],
    ),
    (
        "Search",
        pb.SearchRequest(text="pen", filter=[_cond("", equals=struct_pb2.Value(string_value="A"))]),
        INVALID,
        ["filter[0].field"],
    ),
    (
        "Search",
        pb.SearchRequest(text="pen", filter=[_cond("brand", equals=struct_pb2.Value(struct_value=_struct(a=1)))]),
        INVALID,
        ["filter[0].equals", "string, number or bool"],
    ),
    (
        "Search",
        pb.SearchRequest(text="pen", filter=[_cond("brand", equals=struct_pb2.Value())]),
        INVALID,
        ["filter[0].equals", "nothing"],
    ),
    (
        "Search",
        pb.SearchRequest(text="pen", filter=[_cond("brand", any_of=struct_pb2.ListValue())]),
        INVALID,
        ["filter[0].any_of", "0 values"],
    ),
    (
        "Search",
        pb.SearchRequest(
            text="pen", filter=[_cond(f"f{i}", equals=struct_pb2.Value(bool_value=True)) for i in range(17)]
        ),
        INVALID,
        ["filter", "17 conditions", "16"],
    ),
    (
        "Search",
        pb.SearchRequest(
            text="pen",
            filter=[
                _cond("brand", equals=struct_pb2.Value(string_value="A")),
                _cond("brand", equals=struct_pb2.Value(string_value="B")),
            ],
        ),
        INVALID,
        ["filter[1].field", "any_of"],
    ),
    # writes
    ("UpsertItems", pb.UpsertItemsRequest(), INVALID, ["items", "0 items"]),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", text="pen")] * 1001),
        INVALID,
        ["items", "1001", "1000"],
    ),
    ("UpsertItems", pb.UpsertItemsRequest(items=[pb.Item(id="a")]), INVALID, ["items[0]", "text or vector"]),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", text="pen"), pb.Item(id="a", text="ink")]),
        INVALID,
        ["items[1].id", "twice"],
    ),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", vector=NAN_VECTOR)]),
        INVALID,
        ["items[0].vector", "finite"],
    ),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", vector=[1.0] * 3)]),
        INVALID,
        ["items[0].vector", "16"],
    ),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", text="pen", metadata=_struct(blob="x" * 20000))]),
        INVALID,
        ["items[0].metadata", "16384"],
    ),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(items=[pb.Item(id="a", text="pen", metadata=_struct(score=float("nan")))]),
        INVALID,
        ["items[0].metadata", "finite"],
    ),
    ("UpsertItems", pb.UpsertItemsRequest(items=[pb.Item(id="", text="pen")]), INVALID, ["items[0].id", "empty"]),
    ("DeleteItems", pb.DeleteItemsRequest(), INVALID, ["ids", "at least 1"]),
    ("DeleteItems", pb.DeleteItemsRequest(ids=["x"] * 1001), INVALID, ["ids", "1001"]),
]


@pytest.fixture(scope="module")
def live(tiny_bundle, tmp_path_factory) -> Any:
    """One server for the whole battery (a module fixture: these requests never change state)."""
    from lmrec.server import ServerConfig

    server = RecommenderServer(
        ServerConfig(bundle=tiny_bundle, state_dir=tmp_path_factory.mktemp("bad") / "state", port=0)
    )
    server.start()
    server.wait_until_loaded(60)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 * MB)])
    yield server, channel
    channel.close()
    server.stop(0)


def _rpc(channel: grpc.Channel, method: str, request: Any) -> grpc.RpcError:
    descriptor = pb.DESCRIPTOR.services_by_name["Recommender"].methods_by_name[method]
    path = f"/lmrec.v1.Recommender/{method}"
    if descriptor.server_streaming:
        call = channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString())
        with pytest.raises(grpc.RpcError) as e:
            list(call(request, timeout=30))
    else:
        call = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString())
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=30)
    return e.value


@pytest.mark.parametrize(("method", "request_", "code", "words"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_request_gets_the_right_status(
    live, method: str, request_: Any, code: grpc.StatusCode, words: list[str]
) -> None:
    error = _rpc(live[1], method, request_)
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), f"{word!r} not in {error.details()!r}"


def _with_invalid_utf8(message: Any, placeholder: str) -> bytes:
    """Serialise `message`, then swap `placeholder` for bytes that are not UTF-8 (same length)."""
    raw = message.SerializeToString()
    assert raw.count(placeholder.encode()) == 1
    return raw.replace(placeholder.encode(), b"\xff\xfe\xfd" + b"\x80" * (len(placeholder) - 3))


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        (
            "UpsertItems",
            _with_invalid_utf8(
                pb.UpsertItemsRequest(items=[pb.Item(id="u", text="pen", metadata=_struct(brand="PLACEHOLDER"))]),
                "PLACEHOLDER",
            ),
        ),
        (
            "UpsertItems",
            _with_invalid_utf8(
                pb.UpsertItemsRequest(items=[pb.Item(id="u", text="pen", metadata=_struct(PLACEHOLDER=1))]),
                "PLACEHOLDER",
            ),
        ),
        ("Embed", _with_invalid_utf8(pb.EmbedRequest(texts=["PLACEHOLDER"]), "PLACEHOLDER")),
    ],
    ids=["metadata-value", "metadata-key", "embed-text"],
)
def test_invalid_utf8_is_invalid_argument(live, method: str, raw: bytes) -> None:
    call = live[1].unary_unary(f"/lmrec.v1.Recommender/{method}")  # raw bytes, no serializer
    with pytest.raises(grpc.RpcError) as e:
        call(raw, timeout=10)
    assert e.value.code() == INVALID, e.value.details()
    assert "UTF-8" in e.value.details()


def test_invalid_utf8_inside_a_bulk_stream(live) -> None:
    raw = _with_invalid_utf8(pb.UpsertItemsRequest(items=[pb.Item(id="PLACEHOLDER", text="pen")]), "PLACEHOLDER")
    call = live[1].stream_unary("/lmrec.v1.Recommender/UpsertItemsStream")
    with pytest.raises(grpc.RpcError) as e:
        call(iter([raw]), timeout=10)
    assert e.value.code() == INVALID and "message 0" in e.value.details()


def test_oversized_message_is_resource_exhausted(live) -> None:
    request = pb.EmbedRequest(texts=["x" * 10_000] * 1000)  # ~10 MB, over the 8 MiB receive limit
    error = _rpc(live[1], "Embed", request)
    assert error.code() == EXHAUSTED


def test_server_is_healthy_and_correct_after_the_battery(live) -> None:
    from lmrec.client import RecommenderClient

    server, channel = live
    for method, request, _, _ in CASES:  # the whole battery once more, back to back
        _rpc(channel, method, request)
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        assert client.health() == "SERVING"
        assert client.health("lmrec.v1.Recommender") == "SERVING"
        assert int(client.model_info()["catalogue_size"]) == 120  # no rejected write got in
        assert len(client.recommend(["office-0"], k=5)) == 5
