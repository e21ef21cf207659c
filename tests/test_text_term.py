"""The text term of a user model's score (UserModelInfo.text_weight): β |u| cos(r, t), t each item's
text vector and r the mean text vector of the history's last items, plus its centred part on items
without a residual (centred_text_weight): C |u| (cos(r, t) − r·t̄), t̄ the trained items' mean text
vector. The SDK's exact scores, both search paths, upserts, the state log, snapshots, saved and
rebuilt bundles and a model update all agree on it; a bundle that cannot rank with it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_bundle import make_tiny_bundle
from lmrec import Bundle, BundleError, BundleWriter, Manifest, NewItemsInfo, Recommender, ResidualTable, VectorIndex
from lmrec.offline import build_bundle_index

RULE = NewItemsInfo(k=3, temperature=0.1, shrink=0.8, bonus=0.25)
BETA = 0.6  # large: on random tiny vectors the term must move the ranking for the tests to mean anything


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "b", user_model=True, new_items=RULE, trained=80, text_weight=BETA)


def _scores(rec: Recommender, history: list[str], text: bool = True, beta: float = BETA,
            centred: float = 0.0) -> np.ndarray:
    """The user model's score as UserModelInfo defines it, from the catalogue's stored vectors."""
    ids = rec.item_ids()
    _, matrix = rec.catalogue.matrix()
    user = rec.users.vectors([history])[0]
    new = np.array([i not in rec.catalogue.residuals for i in ids])  # type: ignore[operator]
    out = matrix @ user + RULE.bonus * new
    if text:
        last = _unit(rec.catalogue.text_vectors(history[-1:])[0])
        cos = rec.catalogue.text_matrix() @ last
        mean = rec.catalogue.residuals.text.mean(0)  # type: ignore[union-attr]  # the trained items' text vectors
        out += np.linalg.norm(user) * (beta * cos + centred * (cos - last @ mean) * new)
    return out


def _top(rec: Recommender, scores: np.ndarray, history: list[str], k: int = 10) -> list[str]:
    ids = rec.item_ids()
    return [ids[j] for j in np.argsort(-scores, kind="stable") if ids[j] not in history][:k]


def _served_as_scored(rec: Recommender, history: list[str], expected: np.ndarray, without: np.ndarray) -> bool:
    """`score_all` gives `expected`; `recommend` and `recommend_batch` rank by it on both paths,
    returning cosines (scores / |u|). Whether its top 10 differs from `without`'s."""
    ids = rec.item_ids()
    scores = rec.score_all([history])[0]
    assert np.allclose(scores, expected, atol=1e-4)
    order = _top(rec, scores, history)
    user = rec.users.vectors([history])[0]
    for mode in ("exact", "ann"):
        found = rec.recommend(history, k=10, mode=mode)
        assert [r.item_id for r in found] == order
        top = [ids.index(r.item_id) for r in found]
        assert np.allclose([r.score for r in found], scores[top] / np.linalg.norm(user), atol=1e-5)
        assert [r.item_id for r in rec.recommend_batch([history], k=10, mode=mode)[0]] == order
    return order != _top(rec, without, history)


def test_the_score_adds_the_cosine_to_the_last_items_text_weighed_by_beta_and_the_user_length(bundle: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    assert rec.manifest.format_version == 3 and rec.manifest.text_weight == BETA
    ids = rec.item_ids()
    # the index keeps the encoder's own output beside each item vector (which holds a residual)
    texts = rec.embed_texts([rec.catalogue.get(i).text for i in ids])
    assert np.allclose(rec.catalogue.text_matrix(), texts, atol=1e-5)
    assert not np.allclose(rec.catalogue.matrix()[1], texts, atol=1e-2)
    moved = 0
    for history in ([ids[0], ids[5], ids[9]], [ids[3], ids[100]], [ids[110], ids[7], ids[64], ids[90]]):
        moved += _served_as_scored(rec, history, _scores(rec, history), _scores(rec, history, text=False))
        # a user vector alone carries no history: it ranks without the text term
        by_vector = rec.recommend(user_vector=rec.embed_user(history), exclude=history, k=10)
        assert [r.item_id for r in by_vector] == _top(rec, _scores(rec, history, text=False), history)
    assert moved >= 2


@pytest.mark.parametrize("beta", [BETA, 0.0])
def test_the_centred_part_places_new_items_against_the_trained_ones_mean(tmp_path: Path, beta: float) -> None:
    centred = 1.5  # large: on random tiny vectors the part must move the ranking for the test to mean anything
    path = make_tiny_bundle(tmp_path / "c", user_model=True, new_items=RULE, trained=80, text_weight=beta,
                            centred_text_weight=centred)
    rec = Recommender.load(path, precision="fp32")
    assert rec.manifest.format_version == 4 and rec.manifest.centred_text_weight == centred
    ids = rec.item_ids()
    moved = 0
    for history in ([ids[0], ids[5], ids[9]], [ids[3], ids[100]], [ids[110], ids[7], ids[64], ids[90]], [ids[85]]):
        moved += _served_as_scored(rec, history, _scores(rec, history, beta=beta, centred=centred),
                                   _scores(rec, history, beta=beta))
        scores = rec.score_all([history])[0]
        for mode in ("exact", "ann"):  # a filter reaches the new items the part scores on both paths
            kept = rec.recommend(history, k=5, mode=mode, filter=lambda i, m: i in ids[80:])
            assert [r.item_id for r in kept] == [i for i in _top(rec, scores, history, k=len(ids)) if i in ids[80:]][:5]
    assert moved >= 2
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["user_model"]["centred_text_weight"] = 11
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="user_model.centred_text_weight must be a number from 0 to 10"):
        Recommender.load(path)
    manifest["user_model"]["centred_text_weight"], manifest["new_items"] = 0.5, None
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="centred_text_weight is set, but the manifest has no new_items"):
        Recommender.load(path, verify=False)


def test_bundle_verify_names_the_serving_settings(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmrec.cli import main

    assert main(["bundle", "verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "format 3" in out and "new-item bonus 0.25, text term β 0.6 (last 1 item(s))" in out
    assert "training: none (zero-shot)" in out


def test_upserts_keep_their_text_vectors_through_the_log_snapshots_and_a_saved_bundle(bundle: Path,
                                                                                      tmp_path: Path) -> None:
    state = tmp_path / "state"
    rec = Recommender.load(bundle, precision="fp32", state_dir=state)
    ids = rec.item_ids()
    rec.add_items(["brand-new"], ["item stapler ink"])
    raw = rec.embed_texts(["item stapler ink"])
    assert np.allclose(rec.catalogue.text_vectors(["brand-new"]), raw, atol=1e-6)
    assert np.allclose(rec.catalogue.vectors(["brand-new"]), rec.catalogue.residuals.apply(["brand-new"], raw),  # type: ignore[union-attr]
                       atol=1e-6)
    given = np.linspace(-1, 1, rec.manifest.dim, dtype=np.float32)
    rec.add_items(["given"], vectors=[given])  # a vector alone is its own text vector: there is no other
    assert np.allclose(rec.catalogue.text_vectors(["given"])[0], _unit(given), atol=1e-6)
    rec.delete_items([ids[4]])
    histories = [[ids[0], ids[9], "brand-new"], [ids[2], "given"], [ids[5], ids[6]]]
    before = rec.score_all(histories)
    assert np.allclose(before[0], _scores(rec, histories[0]), atol=1e-4)
    rec.close()
    replayed = Recommender.load(bundle, precision="fp32", state_dir=state)  # from the log
    assert np.allclose(replayed.score_all(histories), before, atol=1e-6)
    assert replayed.snapshot() is not None
    replayed.close()
    snapshot = Recommender.load(bundle, precision="fp32", state_dir=state)  # from the snapshot
    assert np.allclose(snapshot.score_all(histories), before, atol=1e-6)
    saved = Recommender.load(snapshot.save(tmp_path / "saved"), precision="fp32")
    assert saved.manifest.format_version == 3 and "brand-new" in saved and ids[4] not in saved
    assert np.allclose(saved.score_all(histories), before, atol=1e-6)


def test_a_model_update_carries_text_vectors_or_embeds_again(bundle: Path, tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    rec.add_items(["brand-new"], ["item stapler ink"])
    given = np.linspace(-1, 1, rec.manifest.dim, dtype=np.float32)
    rec.add_items(["given"], vectors=[given])
    source = Bundle.open(bundle)
    old = rec.catalogue.residuals
    assert old is not None
    with BundleWriter(tmp_path / "update") as writer:  # the same encoder, other residuals: texts embed again
        writer.copy_from(source, skip=(Manifest.RESIDUALS,))
        ResidualTable(old.ids, old.text, -old.residual, RULE).save(writer.path(Manifest.RESIDUALS))
        update = writer.finish(source.manifest)
    new = rec.reopen(update)
    raw = new.embed_texts(["item stapler ink"])
    assert np.allclose(new.catalogue.text_vectors(["brand-new"]), raw, atol=1e-6)
    assert np.allclose(new.catalogue.text_vectors(["given"])[0], _unit(given), atol=1e-6)
    again = new.reopen(update)  # the same encoder and table: vectors and text vectors kept as they are
    for item in ("brand-new", "given"):
        assert np.allclose(again.catalogue.text_vectors([item]), new.catalogue.text_vectors([item]))
        assert np.allclose(again.catalogue.vectors([item]), new.catalogue.vectors([item]))


def test_an_index_built_offline_keeps_the_text_vectors(bundle: Path, tmp_path: Path) -> None:
    rec = Recommender.load(bundle, precision="fp32")
    ids = rec.item_ids()
    np.save(tmp_path / "v.npy", rec.embed_texts([rec.catalogue.get(i).text for i in ids]))  # as `lmrec embed` does
    (tmp_path / "v.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    report = build_bundle_index(bundle, tmp_path / "v.npy", tmp_path / "rebuilt", queries=0, progress=False)
    assert report["text_vectors"] is True
    again = Recommender.load(tmp_path / "rebuilt", precision="fp32")
    histories = [ids[:3], [ids[50], ids[110]]]
    assert np.allclose(again.score_all(histories), rec.score_all(histories), atol=1e-4)


def test_a_bundle_whose_index_holds_no_text_vectors_is_refused(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "b", user_model=True, new_items=RULE)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["user_model"]["text_weight"] = 0.5
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"index/ holds no text vectors.*user_model.text_weight"):
        Recommender.load(bundle)
    manifest["user_model"]["text_weight"] = -1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="user_model.text_weight must be a number from 0 to 10"):
        Recommender.load(bundle)


def test_an_index_with_text_vectors_checks_them_reuses_their_slots_and_saves_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors, text = rng.normal(size=(2, 40, 8)).astype(np.float32)
    ids = [f"i{n}" for n in range(40)]
    plain = VectorIndex(8)
    with pytest.raises(ValueError, match="text: an index with_text takes"):
        plain.add(ids, vectors, text)
    plain.add(ids, vectors)
    with pytest.raises(ValueError, match="text: this index keeps no text vectors"):
        plain.search(vectors[:1], 3, text=text[:1])
    index = VectorIndex(8, with_text=True)
    with pytest.raises(ValueError, match="text: an index with_text takes"):
        index.add(ids, vectors)
    with pytest.raises(ValueError, match="text: 2 rows for 40 ids"):
        index.add(ids, vectors, text[:2])
    index.add(ids, vectors, text)
    assert np.allclose(index.text_vectors(["i3"]), _unit(text[3]), atol=1e-6)
    with pytest.raises(ValueError, match=r"text: expected shape \(2, 8\)"):
        index.search(vectors[:2], 3, text=text[:1])
    index.delete(["i3"])
    index.add(["late"], vectors[3:4], text[5:6])  # reuses i3's slot
    assert index.slots == 40 and np.allclose(index.text_vectors(["late"]), _unit(text[5:6]), atol=1e-6)
    query, tq = vectors[:2], 0.7 * text[10:12]
    expected = _unit(query) @ _unit(vectors).T + tq @ _unit(text).T
    expected[:, 3] = _unit(query) @ _unit(vectors[3]) + tq @ _unit(text[5])
    live = [("late" if n == 3 else i) for n, i in enumerate(ids)]
    for mode in ("exact", "ann"):
        found = index.search(query, 5, text=tq, mode=mode)
        for row, hits in enumerate(found):
            assert [i for i, _ in hits] == [live[j] for j in np.argsort(-expected[row])[:5]]
            assert np.allclose([s for _, s in hits], np.sort(expected[row])[::-1][:5], atol=1e-5)
    index.save(tmp_path / "index")
    loaded = VectorIndex.load(tmp_path / "index")
    assert loaded.has_text and np.array_equal(loaded.matrix(text=True)[1], index.matrix(text=True)[1])
    assert loaded.search(query, 5, text=tq) == index.search(query, 5, text=tq)
    (tmp_path / "index" / "text.npy").write_bytes(b"damaged")
    with pytest.raises(BundleError, match="text.npy: sha256 mismatch"):
        VectorIndex.load(tmp_path / "index")
