"""Items without a residual: what they borrow, the bonus they get under the user model, and that
the SDK, the index's two search paths and a derived bundle all agree on both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_bundle import make_tiny_bundle
from lmrec import Bundle, BundleError, BundleWriter, Manifest, NewItemsInfo, Recommender, ResidualTable
from lmrec.offline import build_bundle_index, embed_file, read_vectors

RULE = NewItemsInfo(k=3, temperature=0.1, shrink=0.8, bonus=0.25)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_new_item_borrows_the_softmax_weighted_residuals_of_its_nearest_trained_items() -> None:
    rng = np.random.default_rng(0)
    text, residual = _unit(rng.normal(size=(30, 8))).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    table = ResidualTable([f"t{i}" for i in range(30)], text, residual, RULE)
    query = _unit(rng.normal(size=(5, 8))).astype(np.float32)
    text, residual = table.text, table.residual  # float16 precision: what a bundle stores
    expected = np.zeros_like(query)
    for n, q in enumerate(query):
        sims = text @ q
        top = np.argsort(-sims)[:3]
        w = np.exp((sims[top] - sims[top].max()) / 0.1)
        expected[n] = 0.8 * (w / w.sum()) @ residual[top]
    assert np.allclose(table.borrowed(query), expected, atol=1e-5)
    vectors = table.apply(["new-a", "t4", "new-b", "t7", "new-c"], query)
    assert np.allclose(vectors[1], _unit(query[1] + residual[4]), atol=1e-6)  # a trained item: its own residual
    assert np.allclose(vectors[0], _unit(query[0] + expected[0]), atol=1e-5)
    rows, _ = table.neighbours(text[:4], exclude=np.arange(4))
    assert all(i not in r for i, r in enumerate(rows.tolist()))  # a dropped trained item never borrows from itself


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "b", user_model=True, new_items=RULE, trained=80)


def test_texts_embedded_by_the_sdk_get_the_residual_the_export_gave(bundle: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    table = rec.catalogue.residuals
    assert table is not None and len(table.ids) == 80
    ids, matrix = rec.catalogue.matrix()
    texts = {i: rec.catalogue.get(i).text for i in ids}
    # re-embedding a trained and a never-trained item gives back the bundle's vectors
    for item in (ids[3], ids[100]):
        before = matrix[ids.index(item)].copy()
        rec.add_items([item], [texts[item]])
        assert np.allclose(rec.catalogue.vectors([item])[0], before, atol=1e-5)
    rec.add_items(["brand-new"], ["item stapler ink"])
    raw = rec.embed_texts(["item stapler ink"])
    assert np.allclose(rec.catalogue.vectors(["brand-new"]), table.apply(["brand-new"], raw), atol=1e-6)


def test_the_bonus_lifts_new_items_under_the_user_model_only(bundle: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    ids = rec.item_ids()
    new = np.array([i not in rec.catalogue.residuals for i in ids])  # type: ignore[operator]
    history = [ids[0], ids[5], ids[9]]
    scores = rec.score_all([history])[0]
    user = rec.users.vectors([history])[0]
    _, matrix = rec.catalogue.matrix()
    assert np.allclose(scores, matrix @ user + 0.25 * new, atol=1e-5)
    exact = rec.recommend(history, k=10, mode="exact")
    ann = rec.recommend(history, k=10, mode="ann")
    assert [r.item_id for r in exact] == [r.item_id for r in ann]
    assert np.allclose([r.score for r in exact], [r.score for r in ann], atol=1e-5)
    order = [ids[j] for j in np.argsort(-scores) if ids[j] not in history][:10]
    assert [r.item_id for r in exact] == order
    # recommend gives the user model's scores over the user vector's length (cosines + bonus / |u|),
    # and a user vector from embed_user (a sharded catalogue's query) ranks as its history does
    top = [ids.index(r.item_id) for r in exact]
    assert np.allclose([r.score for r in exact], scores[top] / np.linalg.norm(user), atol=1e-5)
    for mode in ("exact", "ann"):
        by_vector = rec.recommend(user_vector=rec.embed_user(history), exclude=history, k=10, mode=mode)
        assert [r.item_id for r in by_vector] == order
    # a unit-length user vector is no user model's: plain cosines, no bonus
    unit = user / np.linalg.norm(user)
    cosine = [ids[j] for j in np.argsort(-(matrix @ unit)) if ids[j] not in history][:10]
    assert [r.item_id for r in rec.recommend(user_vector=unit, exclude=history, k=10)] == cosine != order
    assert any(new[ids.index(r.item_id)] for r in exact)
    batch = rec.recommend_batch([history], k=10)[0]
    assert [r.item_id for r in batch] == order
    # queries that are not a user model's: plain cosines
    similar = rec.similar_items(ids[0], k=5)
    assert np.allclose([r.score for r in similar], np.sort(matrix[1:] @ matrix[0])[::-1][:5], atol=1e-5)
    # a filter applies to the boosted items on both paths
    only = {"topic": "garden"}
    for mode in ("exact", "ann"):
        found = rec.recommend(history, k=5, filter=only, mode=mode)
        assert found and all(rec.catalogue.metadata(r.item_id)["topic"] == "garden" for r in found)


def test_a_derived_bundle_keeps_the_rule_and_a_broken_one_is_refused(bundle: Path, tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    rec.add_items(["brand-new"], ["item pan knife"])
    saved = rec.save(tmp_path / "saved")
    again = Recommender.load(saved, precision="fp32")
    assert again.manifest.new_items == RULE and again.catalogue.residuals is not None
    assert np.allclose(again.catalogue.vectors(["brand-new"]), rec.catalogue.vectors(["brand-new"]))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["new_items"]["temperature"] = 0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="new_items.temperature"):
        Recommender.load(bundle)


def test_an_index_built_over_embedded_texts_gives_each_item_its_residual(bundle: Path, tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    ids, matrix = rec.catalogue.matrix()
    np.save(tmp_path / "v.npy", rec.embed_texts([rec.catalogue.get(i).text for i in ids]))  # as `lmrec embed` does
    (tmp_path / "v.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    report = build_bundle_index(bundle, tmp_path / "v.npy", tmp_path / "rebuilt", queries=0, progress=False)
    assert report["residuals"] == {"own": 80, "borrowed": len(ids) - 80}
    again = Recommender.load(tmp_path / "rebuilt", precision="fp32")
    assert np.allclose(again.catalogue.vectors(ids), matrix, atol=1e-5)  # trained and borrowing items alike
    history = ids[:3]
    assert [r.item_id for r in again.recommend(history, k=10)] == [r.item_id for r in rec.recommend(history, k=10)]


def test_a_model_update_with_the_same_encoder_gives_upserts_the_new_tables_residuals(bundle: Path,
                                                                                    tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    rec.add_items(["brand-new"], ["item stapler ink"])
    given = np.full(rec.manifest.dim, 0.5, dtype=np.float32)
    rec.add_items(["given"], vectors=[given])  # a vector alone: kept as given under the same encoder
    old = rec.catalogue.residuals
    assert old is not None
    source = Bundle.open(bundle)
    with BundleWriter(tmp_path / "update") as writer:  # another training: the same encoder, other residuals
        writer.copy_from(source, skip=(Manifest.RESIDUALS,))
        ResidualTable(old.ids, old.text, -old.residual, RULE).save(writer.path(Manifest.RESIDUALS))
        update = writer.finish(source.manifest)
    new = rec.reopen(update)
    table = new.catalogue.residuals
    assert table is not None and np.allclose(table.residual, -old.residual)
    raw = new.embed_texts(["item stapler ink"])
    assert np.allclose(new.catalogue.vectors(["brand-new"]), table.apply(["brand-new"], raw), atol=1e-5)
    assert np.allclose(new.catalogue.vectors(["given"])[0], _unit(given), atol=1e-6)


def test_a_text_query_meets_items_where_a_new_item_with_that_text_would_stand(bundle: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    table = rec.catalogue.residuals
    assert table is not None
    ids, matrix = rec.catalogue.matrix()
    query = rec.embed_texts(["item stapler ink"])
    placed = table.place(query)
    assert np.allclose(placed, table.apply(["never-seen"], query), atol=1e-6)
    want = [ids[j] for j in np.argsort(-(placed @ matrix.T)[0])[:5]]
    assert [r.item_id for r in rec.search("item stapler ink", k=5, mode="exact")] == want
    assert [r.item_id for r in rec.search(query[0], k=5, mode="exact")] == want  # a vector already embedded
    # trained items' own texts find them far more often than the bare text vectors did
    trained = [i for i in ids if i in table][:40]
    texts = [rec.catalogue.get(i).text for i in trained]
    bare = np.mean(np.array(ids)[np.argmax(rec.embed_texts(texts) @ matrix.T, 1)] == np.array(trained))
    found = np.mean([rec.search(t, k=1, mode="exact")[0].item_id == i for t, i in zip(texts, trained, strict=True)])
    assert found > bare + 0.2, (found, bare)


def test_a_table_above_the_limit_keeps_the_bare_query(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    ids, matrix = rec.catalogue.matrix()
    query = rec.embed_texts(["item stapler ink"])
    monkeypatch.setattr(Recommender, "place_limit", 79)  # the table holds 80 trained items
    want = [ids[j] for j in np.argsort(-(query @ matrix.T)[0])[:5]]
    assert [r.item_id for r in rec.search("item stapler ink", k=5, mode="exact")] == want


def test_item_vectors_embedded_offline_are_the_catalogues_and_index_as_they_are(bundle: Path, tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    ids, matrix = rec.catalogue.matrix()
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": i, "text": rec.catalogue.get(i).text}) + "\n" for i in ids))
    report = embed_file(bundle, items, tmp_path / "v.parquet", precision="fp32", workers=1, progress=False,
                        item_vectors=True)
    assert report.vectors == "item"
    vectors = read_vectors(str(tmp_path / "v.parquet"))  # a str path as well as a Path
    assert vectors.ids == ids and np.allclose(vectors.array, matrix, atol=1e-5)  # what the user model scores
    built = build_bundle_index(bundle, tmp_path / "v.parquet", tmp_path / "rebuilt", queries=0, progress=False)
    assert built["vectors"] == "item" and built["residuals"] is None  # not given their residuals twice
    assert np.allclose(Recommender.load(tmp_path / "rebuilt", precision="fp32").catalogue.vectors(ids), matrix,
                       atol=1e-5)
    with pytest.raises(ValueError, match="item vectors need a .parquet file"):
        embed_file(bundle, items, tmp_path / "v.npy", workers=1, progress=False, item_vectors=True)


def test_spark_partitions_write_item_vectors_as_lmrec_embed_does(bundle: Path) -> None:
    pd = pytest.importorskip("pandas", reason="lmrec.spark needs the spark extra (pandas)")
    from lmrec.spark import embed_partitions

    rec = Recommender.load(bundle, precision="fp32")
    ids, matrix = rec.catalogue.matrix()
    frame = pd.DataFrame({"id": ids, "text": [rec.catalogue.get(i).text for i in ids]})
    for item_vectors, want in ((True, matrix), (False, rec.embed_texts(list(frame["text"])))):
        out = pd.concat(embed_partitions(str(bundle), precision="fp32", item_vectors=item_vectors)(iter([frame])))
        assert list(out["id"]) == ids and np.allclose(np.stack(out["vector"].to_list()), want, atol=1e-5)
