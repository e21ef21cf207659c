"""Every RPC against a live in-process server, compared with the SDK answering the same question."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmrec
import numpy as np
import pytest
from _grpc_fixtures import client, server, start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from _tiny_bundle import make_tiny_bundle
from lmrec import NewItemsInfo
from lmrec.client import RecommenderClient, RemoteError
from lmrec.server import Limits
from lmrec.server.v1 import recommender_pb2 as pb


@pytest.fixture(scope="module")
def sdk(tiny_bundle: Path) -> lmrec.Recommender:
    return lmrec.Recommender.load(tiny_bundle)


def test_model_info(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    info = client.model_info()
    assert info["dim"] == sdk.dim == 16
    assert info["device"] == "cpu" and info["precision"] == sdk.precision
    assert info["precision_reason"] == sdk.precision_reason and info["precision_reason"].startswith(sdk.precision)
    assert int(info["catalogue_size"]) == len(sdk) == 120
    assert info["lmrec_version"] == lmrec.__version__
    assert info["limits"]["max_k"] == Limits().max_k
    assert info["max_length"] == 32
    assert info.get("text_weight", 0.0) == sdk.manifest.text_weight == 0.0


@pytest.mark.parametrize("centred", [0.0, 1.5])
def test_a_history_ranks_with_the_text_term_the_bundle_reports(start_server, tmp_path: Path, centred: float) -> None:
    bundle = make_tiny_bundle(tmp_path / "text", user_model=True, trained=80, text_weight=0.6,
                              new_items=NewItemsInfo(k=3, temperature=0.1, shrink=0.8, bonus=0.25),
                              centred_text_weight=centred)
    sdk = lmrec.Recommender.load(bundle)
    with RecommenderClient(f"127.0.0.1:{start_server(bundle).port}", timeout=10) as c:
        info = c.model_info()
        assert info["text_weight"] == pytest.approx(0.6)
        assert info.get("centred_text_weight", 0.0) == pytest.approx(centred)
        for history in (["office-0", "garden-5", "kitchen-2"], ["music-3", "office-8"]):
            got, expected = c.recommend(history, k=10), sdk.recommend(history, k=10)
            assert [r.item_id for r in got] == [r.item_id for r in expected]
            np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], atol=1e-5)


def test_embed_matches_the_sdk(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    texts = ["stapler paper", "guitar drum piano", "knife", "seed soil rake hose"]
    np.testing.assert_allclose(client.embed_texts(texts), sdk.embed_texts(texts), atol=1e-6)


def test_embed_stream_chunks_in_order(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    words = ["stapler", "paper", "pen", "guitar", "drum", "knife", "pan", "seed"]
    texts = [f"{words[i % 8]} {words[(i * 3) % 8]}" for i in range(600)]
    chunks = list(client.embed_texts_stream(texts, chunk_size=256))
    assert [offset for offset, _ in chunks] == [0, 256, 512]
    assert [len(v) for _, v in chunks] == [256, 256, 88]
    np.testing.assert_allclose(np.concatenate([v for _, v in chunks]), sdk.embed_texts(texts), atol=1e-6)


def test_recommend_history_matches_the_sdk(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    history = ["office-0", "office-4", "garden-1"]
    remote, local = client.recommend(history, k=5), sdk.recommend(history, k=5)
    assert type(remote[0]) is type(local[0])  # the SDK's result type: code moves between the two unchanged
    assert [(i, pytest.approx(s, abs=1e-5)) for i, s in remote] == [tuple(r) for r in local]
    assert not set(history) & {i for i, _ in remote}


def test_recommend_explain_unknown_and_strict(client: RecommenderClient) -> None:
    results = client.recommend(["office-0", "office-4", "no-such-item"], k=3, explain=True)
    assert all(r.because and set(r.because) <= {"office-0", "office-4"} for r in results)
    response = client.stub.Recommend(pb.RecommendRequest(history=["office-0", "no-such-item"], k=3), timeout=5)
    assert list(response.unknown_ids) == ["no-such-item"] and len(response.items) == 3
    with pytest.raises(KeyError, match="no-such-item") as e:
        client.recommend(["office-0", "no-such-item"], strict=True)
    assert isinstance(e.value, RemoteError) and e.value.code.name == "NOT_FOUND"


def test_recommend_other_bases(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    popular = client.recommend(k=4)  # nothing known about the user
    assert [i for i, _ in popular] == [i for i, _ in sdk.recommend([], k=4)]
    vector = sdk.get_item("music-3").vector
    by_vector = client.recommend(user_vector=vector, k=3)
    assert by_vector[0].item_id == "music-3" and by_vector[0].score == pytest.approx(1.0, abs=1e-5)
    examples = client.recommend(positive=["music-3", "music-7"], negative=["office-0"], k=5)
    assert [i for i, _ in examples] == [
        i for i, _ in sdk.recommend(positive=["music-3", "music-7"], negative=["office-0"], k=5)
    ]
    assert {"music-3", "music-7", "office-0"}.isdisjoint(i for i, _ in examples)


def test_a_sharded_trained_catalogue_ranks_a_user_as_the_whole_one(start_server, tmp_path: Path) -> None:
    """docs/scaling.md's scatter-gather on a trained bundle: two shards with half the items each,
    the history's vectors fetched from their owners, EmbedUser on one shard, Recommend with that
    vector on both, merged: the whole catalogue's ranking, new-item bonus included."""
    rule = NewItemsInfo(k=3, temperature=0.1, shrink=0.8, bonus=0.25)
    bundle = make_tiny_bundle(tmp_path / "trained", user_model=True, new_items=rule, trained=80)
    whole = lmrec.Recommender.load(bundle)
    ids = whole.item_ids()
    shards = [start_server(bundle) for _ in range(2)]
    clients = [RecommenderClient(f"127.0.0.1:{s.port}", timeout=10) for s in shards]
    try:
        for n, c in enumerate(clients):
            c.delete_items([i for j, i in enumerate(ids) if j % 2 != n])
        for history in (["office-0", "garden-5", "kitchen-2"], ["music-3", "office-8", "garden-9"]):
            held = {}  # each shard answers for the ids it holds, and lists the others as missing
            for c in clients:
                held.update((item.item_id, item.vector) for item in c.get_items(history, missing_ok=True))
            user = clients[0].embed_user(vectors=[held[i] for i in history])
            np.testing.assert_allclose(user, whole.embed_user(history), atol=1e-5)
            merged = sorted((r for c in clients for r in c.recommend(user_vector=user, exclude=history, k=10)),
                            key=lambda r: -r.score)[:10]
            expected = whole.recommend(history, k=10)
            assert [r.item_id for r in merged] == [r.item_id for r in expected]
            assert any(r.item_id not in whole.catalogue.residuals for r in expected)  # the bonus was at stake
        response = clients[0].stub.EmbedUser(pb.EmbedUserRequest(history=["office-0", "gone-item"]), timeout=5)
        assert list(response.unknown_ids) == ["gone-item"]
        np.testing.assert_allclose(response.vector.values, whole.embed_user(["office-0"]), atol=1e-5)
    finally:
        for c in clients:
            c.close()


def test_filters_and_exclude(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    got = client.recommend(["kitchen-2"], k=10, filter={"brand": "Acme"}, exclude=["kitchen-6"])
    assert got and all(sdk.get_item(i).metadata["brand"] == "Acme" for i, _ in got)
    assert "kitchen-6" not in {i for i, _ in got}
    # music items all have odd positions in the tiny catalogue, office items even ones
    either = client.search("guitar drum", k=20, filter={"topic": ["music", "office"], "tags": "even"})
    assert len(either) == 20 and all(sdk.get_item(i).metadata["topic"] == "office" for i, _ in either)


def test_similar_items_and_search_match_the_sdk(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    assert [i for i, _ in client.similar_items("garden-5", k=5)] == [i for i, _ in sdk.similar_items("garden-5", k=5)]
    assert [i for i, _ in client.search("piano violin", k=5)] == [i for i, _ in sdk.search("piano violin", k=5)]


def test_k_above_the_catalogue_returns_the_whole_catalogue(client: RecommenderClient) -> None:
    assert len(client.search("pen", k=1000)) == 120
    assert len(client.similar_items("office-0", k=1000)) == 119


def test_get_items_answers_in_order_and_lists_the_missing(client: RecommenderClient, sdk: lmrec.Recommender) -> None:
    asked = ["music-3", "no-such-item", "office-0", "music-3"]
    response = client.stub.GetItems(pb.GetItemsRequest(ids=asked, include_vector=True), timeout=5)
    assert [i.id for i in response.items] == ["music-3", "office-0", "music-3"]
    assert list(response.missing) == ["no-such-item"]
    with pytest.raises(RemoteError, match="no-such-item"):
        client.get_items(asked)
    items = client.get_items(asked, missing_ok=True)
    assert items[1].text == sdk.get_item("office-0").text and items[1].metadata == sdk.get_item("office-0").metadata
    np.testing.assert_allclose(items[0].vector, sdk.get_item("music-3").vector, atol=1e-7)
    bare = client.stub.GetItems(pb.GetItemsRequest(ids=["office-0"]), timeout=5)
    assert not bare.items[0].vector and not bare.missing


def test_upsert_get_delete_roundtrip(client: RecommenderClient) -> None:
    size = client.add_items(["new-1", "new-2"], texts=["guitar amp pick", "oven whisk"],
                            metadata=[{"brand": "Nimbus", "year": 2024, "tags": ["x", 1.5]}, {}])
    assert size == 122
    item = client.get_item("new-1")
    assert item.text == "guitar amp pick"
    assert item.metadata == {"brand": "Nimbus", "year": 2024, "tags": ["x", 1.5]}
    np.testing.assert_allclose(item.vector, client.embed_texts(["guitar amp pick"])[0], atol=1e-6)
    assert client.search("guitar amp pick", k=1)[0].item_id == "new-1"
    vec = np.zeros(16, dtype=np.float32)
    vec[3] = 2.0
    client.add_items(["vec-1", "new-2"], texts=[None, "oven whisk plate"], vectors=[vec, np.ones(16)])
    vec_item = client.get_item("vec-1")
    assert vec_item.vector[3] == pytest.approx(1.0) and vec_item.text is None  # normalised, no text
    assert client.get_item("new-2").text == "oven whisk plate"
    result = client.delete_items(["new-1", "vec-1", "never-was"])
    assert (result.deleted, result.missing, result.catalogue_size) == (2, ["never-was"], 121)
    with pytest.raises(KeyError):
        client.get_item("new-1")
    assert client.delete_items(["new-1"]).missing == ["new-1"]  # a retried delete succeeds


def test_mixed_texts_and_vectors_in_one_request(client: RecommenderClient) -> None:
    request = pb.UpsertItemsRequest(items=[
        pb.Item(id="m-text", text="drum song"),
        pb.Item(id="m-vec", text="labelled vector", vector=[1.0] + [0.0] * 15),
    ])
    assert client.stub.UpsertItems(request, timeout=5).upserted == 2
    np.testing.assert_allclose(client.get_item("m-text").vector, client.embed_texts(["drum song"])[0],
                               atol=1e-6)
    assert client.get_item("m-vec").vector[0] == pytest.approx(1.0)


def test_bulk_upsert_stream(client: RecommenderClient) -> None:
    batches = [{"ids": [f"bulk-{b}-{i}" for i in range(50)], "texts": ["pen ink desk"] * 50} for b in range(4)]
    assert client.add_items_stream(batches) == 200
    assert client.model_info()["catalogue_size"] == "320"
    assert client.get_item("bulk-3-49").text == "pen ink desk"


def test_writes_survive_a_restart(start_server, tiny_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state-restart"
    first = start_server(tiny_bundle, state_dir=state)
    with RecommenderClient(f"127.0.0.1:{first.port}") as c:
        c.add_items(["keep"], texts=["violin string"], metadata=[{"k": "v"}])
        c.delete_items(["office-0"])
    first.stop(0)
    second = start_server(tiny_bundle, state_dir=state)
    with RecommenderClient(f"127.0.0.1:{second.port}") as c:
        assert c.get_item("keep").metadata == {"k": "v"}
        with pytest.raises(KeyError):
            c.get_item("office-0")


def test_concurrent_single_text_embeds_share_model_runs(start_server, tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, metrics_port=0, max_batch=32, max_wait_ms=5)
    texts = [f"pen {w}" for w in ["ink", "desk", "paper", "stapler"]] * 16
    with RecommenderClient(f"127.0.0.1:{server.port}") as c, ThreadPoolExecutor(32) as pool:
        vectors = list(pool.map(lambda t: c.embed_texts([t])[0], texts))
        expected = c.embed_texts(texts[:4])
    for i, v in enumerate(vectors):
        np.testing.assert_allclose(v, expected[i % 4], atol=1e-6)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    runs = values["lmrec_embed_batch_texts_count"]
    assert values["lmrec_embed_batch_texts_sum"] == 68  # 64 single texts + one call of 4
    assert runs < 40, f"64 concurrent single-text calls took {runs:.0f} model runs"
    assert values['lmrec_requests_total{code="OK",method="/lmrec.v1.Recommender/Embed"}'] == 65
    assert "lmrec_request_seconds_bucket" in metrics and "lmrec_embed_queue_texts" in metrics
    assert values["lmrec_catalogue_items"] == 120


def test_reflection_describes_the_service(server) -> None:
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {"lmrec.v1.Recommender", "grpc.health.v1.Health"} <= set(database.get_services())
        service = DescriptorPool(database).FindServiceByName("lmrec.v1.Recommender")
        assert [m.name for m in service.methods] == [
            m.name for m in pb.DESCRIPTOR.services_by_name["Recommender"].methods
        ]
        assert service.methods_by_name["Recommend"].input_type.fields_by_name["k"].number == 5
