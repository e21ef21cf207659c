"""Recommender over a tiny real bundle: loading, recommending, changes, durability, threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _tiny_bundle import BRANDS, TEMPERATURE, make_tiny_bundle
from lmrec import (
    BundleError,
    ExplainedRecommendation,
    LmrecError,
    Manifest,
    Recommendation,
    Recommender,
    StateError,
    UnknownItemError,
    verify_bundle,
)

DEFAULT_RECENT = Manifest(dim=1, max_length=2).recent  # what a bundle that does not say gets


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny")


@pytest.fixture(scope="module")
def user_model_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny-um", user_model=True, max_history=8)


@pytest.fixture(scope="module")
def rec(bundle) -> Recommender:
    return Recommender.load(bundle)


@pytest.fixture(scope="module")
def rec5(tmp_path_factory) -> Recommender:
    """A bundle whose manifest asks for the mean of the last 5 items."""
    return Recommender.load(make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny-5", recent=5))


def exact(rec: Recommender, query: np.ndarray, skip: set[str], k: int) -> list[str]:
    ids = rec.item_ids()
    vectors = np.stack([rec.get_item(i).vector for i in ids])
    order = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")
    return [ids[j] for j in order if ids[j] not in skip][:k]


def test_load_chooses_cpu_int8_and_describes_catalogue(rec, bundle):
    assert (rec.device, rec.precision) == ("cpu", "int8")
    assert len(rec) == 120 and rec.item_ids()[:2] == ["office-0", "garden-1"]
    assert Recommender.load(bundle, precision="fp32").precision == "fp32"
    item = rec.get_item("music-3")
    assert item.metadata["topic"] == "music" and item.text.startswith("item ")
    with pytest.raises(UnknownItemError, match="'nope'"):
        rec.get_item("nope")
    assert [i.item_id for i in rec.get_items(["music-3", "office-0"])] == ["music-3", "office-0"]
    assert [i.item_id for i in rec.get_items(["nope", "music-3"], missing_ok=True)] == ["music-3"]
    with pytest.raises(UnknownItemError, match=r"'nope' \(and 1 more\)"):
        rec.get_items(["music-3", "nope", "nope2"])
    with pytest.raises(ValueError, match="ids"):
        rec.get_items("music-3")
    with pytest.raises(ValueError, match="device must be one of"):
        Recommender.load(bundle, device="tpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        Recommender.load(bundle, precision="int4")


def test_cuda_without_cuda_raises(bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with pytest.raises(LmrecError, match="CUDAExecutionProvider"):
        Recommender.load(bundle, device="cuda")
    assert Recommender.load(bundle, device="auto").device == "cpu"


def test_corrupted_bundle_is_refused(tmp_path):
    path = make_tiny_bundle(tmp_path / "b")
    graph = path / "index" / "hnsw.bin"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="index/hnsw.bin"):
        Recommender.load(path)
    path = make_tiny_bundle(tmp_path / "c")
    (path / "item_encoder.int8.onnx").write_bytes(b"x" * (path / "item_encoder.int8.onnx").stat().st_size)
    with pytest.raises(BundleError, match="item_encoder.int8.onnx: sha256 mismatch"):
        Recommender.load(path)  # the CPU default runs int8: checked
    assert Recommender.load(path, precision="fp32").precision == "fp32"  # a variant it never runs is not hashed


def test_embed_texts_matches_catalogue_vectors(rec):
    ids = rec.item_ids()[:5]
    got = rec.embed_texts([rec.get_item(i).text for i in ids])
    assert got.dtype == np.float32 and got.shape == (5, 16)
    np.testing.assert_allclose(got, np.stack([rec.get_item(i).vector for i in ids]), atol=1e-5)
    with pytest.raises(ValueError, match="empty list"):
        rec.embed_texts([])
    with pytest.raises(ValueError, match=r"texts\[1\]: empty text"):
        rec.embed_texts(["pen", "  "])
    with pytest.raises(ValueError, match="single string"):
        rec.embed_texts("pen")


@pytest.mark.parametrize("recent", [DEFAULT_RECENT, 5])
def test_recommend_from_history_is_exact_mean_of_recent_items(rec, rec5, recent):
    rec = rec5 if recent == 5 else rec
    history = [f"office-{i}" for i in range(0, 40, 4)] + ["garden-1"]
    got = rec.recommend(history, k=8)
    assert all(isinstance(r, Recommendation) for r in got)
    query = np.mean([rec.get_item(i).vector for i in history[-recent:]], axis=0)
    assert [i for i, _ in got] == exact(rec, query, set(history), 8)
    assert not set(history) & {i for i, _ in got}
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0 + 1e-6
    assert [i for i, _ in rec.recommend(history, k=8, exclude=[got[0].item_id])] == [i for i, _ in got[1:]] + \
        [exact(rec, query, set(history), 9)[-1]]


def test_explain_names_history_items(rec, rec5):
    assert all(r.because == ("office-4",) for r in rec.recommend(["music-3", "office-4"], k=3, explain=True))
    rec = rec5
    history = ["office-0", "music-3", "office-4"]
    got = rec.recommend(history, k=4, explain=True)
    assert all(isinstance(r, ExplainedRecommendation) for r in got)
    for item, _, because in got:
        assert because and set(because) <= set(history)
        sims = {h: float(rec.get_item(h).vector @ rec.get_item(item).vector) for h in history}
        assert because[0] == max(sims, key=sims.get)


def test_user_vector_and_positive_negative_examples(rec):
    v = rec.get_item("kitchen-2").vector
    assert [i for i, _ in rec.recommend(user_vector=v, k=3)] == exact(rec, v, set(), 3)
    pos, neg = ["music-3", "music-7"], ["office-0"]
    vec = {i: rec.get_item(i).vector for i in pos + neg}
    avg = (vec["music-3"] + vec["music-7"]) / 2
    query = avg + (avg - vec["office-0"])  # Qdrant's average_vector strategy
    got = rec.recommend(positive=pos, negative=neg, k=5)
    assert [i for i, _ in got] == exact(rec, query, set(pos + neg), 5)
    assert [i for i, _ in rec.recommend(positive=[vec["music-3"]], k=2)] == exact(rec, vec["music-3"], set(), 2)
    with pytest.raises(ValueError, match="needs positive"):
        rec.recommend(negative=neg)
    with pytest.raises(ValueError, match="exactly one of"):
        rec.recommend(["office-0"], user_vector=v)
    with pytest.raises(ValueError, match="exactly one of"):
        rec.recommend()
    with pytest.raises(UnknownItemError, match=r"positive\[0\]"):
        rec.recommend(positive=["nope"])


def test_filters_equals_in_list_fields_and_callables(rec):
    history = ["office-0", "office-4"]
    got = rec.recommend(history, k=5, filter={"brand": "Acme"})
    assert len(got) == 5 and all(rec.get_item(i).metadata["brand"] == "Acme" for i, _ in got)
    got = rec.recommend(history, k=10, filter={"brand": ["Zephyr", "Nimbus"], "topic": "garden"})
    assert all(rec.get_item(i).metadata["brand"] != "Acme" and i.startswith("garden") for i, _ in got)
    got = rec.recommend(history, k=10, filter={"tags": "odd"})  # list-valued field: any element
    assert got and all(int(i.split("-")[1]) % 2 == 1 for i, _ in got)
    got = rec.recommend(history, k=3, filter=lambda item, meta: meta["topic"] == "music")
    assert all(i.startswith("music") for i, _ in got)
    assert rec.recommend(history, k=3, filter={"brand": "NoSuchBrand"}) == []
    for bad in ({}, {"brand": {"$eq": "Acme"}}, {"brand": []}, "brand=Acme"):
        with pytest.raises(ValueError, match="filter"):
            rec.recommend(history, k=3, filter=bad)


def test_bad_input_is_a_clear_value_error(rec):
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
            rec.recommend(["office-0"], k=k)
    # k above the catalogue size returns what there is (the proto's rule; the SDK used to raise)
    assert len(rec.recommend(["office-0"], k=121)) == 119 and len(rec.similar_items("office-0", k=10**6)) == 119
    with pytest.raises(ValueError, match=r"user_vector: expected shape \(n, 16\)"):
        rec.recommend(user_vector=np.ones(8))
    with pytest.raises(ValueError, match="NaN"):
        rec.recommend(user_vector=np.full(16, np.nan))
    with pytest.raises(ValueError, match="history"):
        rec.recommend("office-0")
    with pytest.raises(ValueError, match="mode"):
        rec.recommend(["office-0"], mode="fast")


def test_unknown_history_ids_are_skipped_counted_or_strict(rec):
    before = rec.skipped_history_ids
    assert rec.recommend(["office-0", "ghost", "ghost2"], k=3) == rec.recommend(["office-0"], k=3)
    assert rec.skipped_history_ids == before + 2
    with pytest.raises(UnknownItemError, match="'ghost' \\(and 1 more\\)"):
        rec.recommend(["office-0", "ghost", "ghost2"], k=3, strict=True)


def test_empty_history_falls_back_to_popularity(rec, bundle):
    popularity = np.load(bundle / "popularity.npy")
    ids = rec.item_ids()
    want = [ids[j] for j in np.argsort(-popularity, kind="stable")[:5]]
    assert [i for i, _ in rec.recommend([], k=5)] == want
    assert [i for i, _ in rec.recommend(["ghost"], k=5)] == want
    got = rec.recommend([], k=5, filter={"brand": "Acme"})
    assert all(rec.get_item(i).metadata["brand"] == "Acme" for i, _ in got)
    # scores stay in [0, 1] like every other score (the proto's rule; they used to be raw counts)
    top = max(float(popularity[ids.index(i)]) for i in ids if rec.get_item(i).metadata["brand"] == "Acme")
    assert got[0].score == pytest.approx(top / popularity.max()) and all(0 <= s <= 1 for _, s in got)


def test_similar_items_search_and_score_all(rec):
    got = rec.similar_items("garden-1", k=4)
    assert "garden-1" not in [i for i, _ in got]
    assert [i for i, _ in got] == exact(rec, rec.get_item("garden-1").vector, {"garden-1"}, 4)
    assert all(i.startswith("music") for i, _ in rec.search("guitar drum piano", k=3))
    with pytest.raises(UnknownItemError):
        rec.similar_items("nope")
    histories = [["office-0", "office-4"], ["music-3"], []]
    scores = rec.score_all(histories)
    assert scores.shape == (3, 120) and scores.dtype == np.float32
    ids = rec.item_ids()
    for row, h in enumerate(histories[:2]):
        ranked = [ids[j] for j in np.argsort(-scores[row], kind="stable") if ids[j] not in h][:5]
        assert ranked == [i for i, _ in rec.recommend(h, k=5)]
    popularity = np.load(rec.bundle.path / "popularity.npy")
    np.testing.assert_allclose(scores[2], popularity / popularity.max(), rtol=1e-6)


def test_ann_mode_agrees_with_exact_on_a_small_catalogue(rec):
    for h in (["office-0"], ["music-3", "kitchen-2"]):
        ann, exact_ = rec.recommend(h, k=5, mode="ann"), rec.recommend(h, k=5, mode="exact")
        np.testing.assert_allclose([s for _, s in ann], [s for _, s in exact_], atol=1e-5)  # ids may differ on ties


def test_user_model_is_used_when_the_bundle_has_one(user_model_bundle):
    rec = Recommender.load(user_model_bundle)
    history = ["office-0", "music-3", "garden-1", "kitchen-2"]  # the tiny user model: the last item
    assert [i for i, _ in rec.recommend(history, k=5)] == exact(rec, rec.get_item("kitchen-2").vector, set(history), 5)
    user = rec.embed_user(history)  # the user model's vector, its length the model's temperature
    np.testing.assert_allclose(user, TEMPERATURE * rec.get_item("kitchen-2").vector, atol=1e-5)
    scores = rec.score_all([history])
    ids = rec.item_ids()
    np.testing.assert_allclose(scores[0], np.stack([rec.get_item(i).vector for i in ids]) @ user, atol=1e-4)
    # the same history as item vectors (from another shard), and its vector as the query
    np.testing.assert_allclose(rec.embed_user(vectors=[rec.get_item(i).vector for i in history]), user, atol=1e-6)
    assert rec.recommend(user_vector=user, exclude=history, k=5) == rec.recommend(history, k=5)


def test_the_last_items_turn_the_user_vector_as_the_manifest_says(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "b", user_model=True, recent_weight=0.4)
    rec = Recommender.load(bundle, precision="fp32")
    history = ["office-0", "music-3", "garden-1", "kitchen-2"]  # the tiny user model: 20 x the last item
    vectors = np.stack([rec.get_item(i).vector for i in history])
    last = vectors[-3:].mean(0) / np.linalg.norm(vectors[-3:].mean(0))
    expected = 0.6 * TEMPERATURE * vectors[-1] + 0.4 * TEMPERATURE * last
    np.testing.assert_allclose(rec.embed_user(history), expected, atol=1e-5)
    np.testing.assert_allclose(rec.embed_user(vectors=vectors), expected, atol=1e-5)
    assert [i for i, _ in rec.recommend(history, k=5)] == exact(rec, expected, set(history), 5)
    ids = rec.item_ids()
    np.testing.assert_allclose(rec.score_all([history])[0], np.stack([rec.get_item(i).vector for i in ids]) @ expected,
                               atol=1e-4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for bad in (1.0, -0.1, "0.2"):
        manifest["user_model"]["recent_weight"] = bad
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="recent_weight"):
            Recommender.load(bundle)


def test_user_segments_separate_topics(rec5):
    rec = rec5
    histories = [[f"{t}-{i}" for i in range(start, start + 20, 4)] for t, start in
                 (("office", 0), ("music", 3), ("office", 20), ("music", 23), ("garden", 1), ("garden", 21))]
    segments = rec.user_segments(histories, 3)
    assert sorted(sorted(s.members) for s in segments) == [[0, 2], [1, 3], [4, 5]]
    for s in segments:
        topic = histories[s.members[0]][0].split("-")[0]
        assert len(s.items) == 5 and all(i.startswith(topic) for i in s.items)
    with pytest.raises(ValueError, match="n must be an integer from 1 to 6"):
        rec.user_segments(histories, 7)


def test_add_and_delete_items(bundle):
    rec = Recommender.load(bundle)
    rec.add_items(["new-1", "new-2"], texts=["guitar drum piano", "stapler paper"],
                  metadata=[{"brand": "Acme"}, {"brand": "Zephyr"}])
    assert len(rec) == 122 and rec.search("guitar drum piano", k=1)[0].item_id == "new-1"
    rec.add_items(["new-1"], vectors=[rec.get_item("office-0").vector * 2])  # upsert from a vector
    assert rec.similar_items("office-0", k=1)[0] == ("new-1", pytest.approx(1.0, abs=1e-5))
    assert rec.get_item("new-1").text is None and rec.get_item("new-1").metadata == {}
    rec.delete_items(["new-1", "office-4"])
    assert "new-1" not in rec and len(rec) == 120
    assert "office-4" not in [i for i, _ in rec.recommend(["office-0"], k=119)]
    assert "office-4" not in rec.item_ids()
    with pytest.raises(UnknownItemError, match="'office-4'"):
        rec.delete_items(["office-0", "office-4"])
    assert "office-0" in rec
    with pytest.raises(ValueError, match="texts .* or vectors"):
        rec.add_items(["x"])
    with pytest.raises(ValueError, match=r"metadata\[0\]: not JSON"):
        rec.add_items(["x"], texts=["pen"], metadata=[{"when": object()}])
    with pytest.raises(ValueError, match="NaN"):
        rec.add_items(["x"], vectors=np.full((1, 16), np.nan))
    with pytest.raises(ValueError, match="unique"):
        rec.add_items(["x", "x"], texts=["pen", "ink"])
    with pytest.raises(LmrecError, match="needs a state_dir"):
        rec.snapshot()


def test_state_dir_makes_changes_durable_and_snapshots_compact(bundle, tmp_path):
    state = tmp_path / "state"
    with Recommender.load(bundle, state_dir=state) as rec:
        rec.add_items(["new-1"], texts=["guitar drum piano"], metadata=[{"brand": "Acme"}])
        rec.delete_items(["office-0"])
        assert rec.pending_changes == 2
    with Recommender.load(bundle, state_dir=state) as rec:
        assert "new-1" in rec and "office-0" not in rec and len(rec) == 120
        assert rec.get_item("new-1").metadata == {"brand": "Acme"}
        snap = rec.snapshot()
        assert snap is not None and rec.pending_changes == 0 and rec.snapshot() is None
        rec.add_items(["new-2"], texts=["pan knife"])
    assert sorted(p.name for p in state.iterdir() if not p.name.startswith(("LOCK", "state")))[0].startswith(
        "snapshot-"
    )
    with Recommender.load(bundle, state_dir=state) as rec:
        assert {"new-1", "new-2"} <= set(rec.item_ids()) and "office-0" not in rec
        assert rec.search("pan knife", k=1)[0].item_id == "new-2"
        with pytest.raises(StateError, match="in use"):
            Recommender.load(bundle, state_dir=state)
    with pytest.raises(LmrecError, match="closed"):
        rec.add_items(["late"], texts=["pen"])  # would not be durable any more
    assert rec.recommend(["new-1"], k=1)  # reads still work
    assert verify_bundle(bundle) == []  # the bundle itself was never written
    other = make_tiny_bundle(tmp_path / "other", seed=1)
    with pytest.raises(StateError, match="belongs to another bundle"):
        Recommender.load(other, state_dir=state)


def test_save_writes_a_new_bundle_with_the_changes(bundle, tmp_path):
    rec = Recommender.load(bundle)
    rec.add_items(["new-1"], texts=["violin string"], metadata=[{"brand": "Acme"}])
    rec.delete_items(["garden-1"])
    out = rec.save(tmp_path / "saved")
    assert verify_bundle(out) == []
    saved = Recommender.load(out)
    assert saved.item_ids() == rec.item_ids() and len(saved) == 120
    assert saved.recommend(["office-0"], k=5) == rec.recommend(["office-0"], k=5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["items"] == 120 and "derived_from" in manifest
    with pytest.raises(BundleError, match="already exists"):
        rec.save(tmp_path / "saved")


def test_concurrent_reads_and_writes_stay_consistent(bundle):
    rec = Recommender.load(bundle)
    history = ["office-0", "office-4", "music-3"]
    expected = rec.recommend(history, k=5, filter={"brand": BRANDS})  # the writer never touches these
    texts = [rec.get_item(i).text for i in rec.item_ids()[:8]]
    expected_vectors = rec.embed_texts(texts)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(n: int) -> None:
        try:
            while not stop.is_set():
                if n % 2:
                    got = rec.recommend(history, k=5, filter=lambda i, m: not i.startswith("w"))
                    assert got == expected, got
                else:
                    np.testing.assert_allclose(rec.embed_texts(texts, batch_size=3), expected_vectors, atol=1e-6)
                rec.score_all([history])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(0)
    for round_ in range(40):
        names = [f"w{round_}-{j}" for j in range(5)]
        rec.add_items(names, vectors=rng.normal(size=(5, 16)), metadata=[{"brand": "Acme"}] * 5)
        rec.delete_items(names[::2])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(rec) == 120 + 40 * 2


def test_sdk_import_and_use_stay_free_of_torch(bundle):
    code = (
        "import sys, lmrec\n"
        f"rec = lmrec.Recommender.load({str(bundle)!r})\n"
        "rec.recommend(['office-0'], k=3); rec.search('pen', k=2)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_cli_recommend_prints_titles_scores_and_reasons(bundle, tmp_path, capsys):
    from lmrec.cli import main

    assert (
        main(["recommend", "--bundle", str(bundle), "--history", "music-3,ghost,office-4", "-k", "3", "--explain"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# skipped 1 unknown history id(s)"
    assert out[1].startswith("  1. ") and "thing" in out[1] and "because you liked: office-4 (Office thing 4)" in out[2]
    assert main(["recommend", "--bundle", str(bundle), "--history", "", "-k", "2"]) == 0
    assert "most popular" in capsys.readouterr().out
    assert main(["recommend", "--bundle", str(bundle), "--history", "office-0", "-k", "0"]) == 2
    assert "k must be an integer >= 1" in capsys.readouterr().err
    assert main(["recommend", "--bundle", str(bundle), "--history", "office-0", "-k", "500"]) == 0  # what there is
    assert len([line for line in capsys.readouterr().out.splitlines() if line[:4].strip().endswith(".")]) == 119
    assert main(["recommend", "--bundle", str(bundle), "--history", "ghost", "--strict"]) == 2
    state = tmp_path / "state"
    with Recommender.load(bundle, state_dir=state) as rec:
        rec.add_items(["new-1"], texts=["stapler paper ink"], metadata=[{"title": "Brand new stapler"}])
    assert main(["recommend", "--bundle", str(bundle), "--history", "new-1", "-k", "1", "--state-dir", str(state)]) == 0
    assert "Office thing" in capsys.readouterr().out


@pytest.mark.slow
def test_minilm_bundle_end_to_end(minilm_bundle):
    rec = Recommender.load(minilm_bundle)
    assert (rec.device, rec.precision, rec.dim) == ("cpu", "int8", 384)
    ids = rec.item_ids()[:40]
    items = [rec.get_item(i) for i in ids]
    int8 = rec.embed_texts([it.text for it in items])
    cosines = np.sum(int8 * np.stack([it.vector for it in items]), axis=1)  # fp32 catalogue vectors
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95
    found = sum(rec.search(it.text, k=3)[0].item_id == it.item_id for it in items)
    assert found >= 36  # an item's own text finds it (ties between near-identical texts aside)
    history = rec.item_ids()[:5]
    ranked = np.argsort(-rec.score_all([history])[0], kind="stable")
    all_ids = rec.item_ids()
    assert [i for i, _ in rec.recommend(history, k=5)] == [all_ids[j] for j in ranked if all_ids[j] not in history][:5]


def test_reads_reenter_writers_wait_for_readers_and_a_read_cannot_write(bundle):
    rec = Recommender.load(bundle)
    # a filter runs inside the query's read: reading again from it is fine
    got = rec.recommend(["office-0"], k=3, filter=lambda item, meta: rec.get_item(item).item_id == item)
    assert len(got) == 3
    with pytest.raises(RuntimeError, match="write lock while holding the read lock"):
        rec.recommend(["office-0"], k=3, filter=lambda item, meta: rec.delete_items([item]) or True)
    assert len(rec) == 120  # nothing was deleted
    inside, release, written = threading.Event(), threading.Event(), []

    def slow_filter(item: str, meta: dict) -> bool:
        inside.set()
        release.wait(5)
        return True

    reader = threading.Thread(target=lambda: rec.recommend(["office-0"], k=3, filter=slow_filter))
    reader.start()
    assert inside.wait(5)
    writer = threading.Thread(target=lambda: written.append(rec.delete_items(["garden-1"])))
    writer.start()
    writer.join(0.2)
    assert not written  # the writer waits for the reader
    release.set()
    reader.join(5)
    writer.join(5)
    assert written == [[]] and "garden-1" not in rec
