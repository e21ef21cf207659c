"""Model updates on a live server: swap to a new bundle (SIGHUP / `reload()`) while requests keep
coming, with the state directory's writes carried onto the new bundle (`Recommender.reopen`)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from _grpc_fixtures import start_server  # noqa: F401  (fixture)
from _tiny_bundle import make_tiny_bundle
from lmrec import Bundle, Recommender
from lmrec.offline import build_bundle_index
from lmrec.server import RecommenderClient


def point(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".next")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def hammer(address: str, stop: threading.Event, errors: list, calls: list) -> None:
    with RecommenderClient(address, timeout=20, max_attempts=1) as client:
        while not stop.is_set():
            try:
                assert len(client.recommend(["garden-1", "music-3"], k=5)) == 5
                assert client.search("pen ink", k=3)
                calls.append(1)
            except Exception as e:  # noqa: BLE001 - every failure is reported by the test
                errors.append(repr(e))


def wait_for(calls: list, n: int, errors: list) -> None:
    deadline = time.monotonic() + 30
    while len(calls) < n:
        assert not errors and time.monotonic() < deadline, errors[:3]
        time.sleep(0.01)


def test_swap_to_a_new_model_under_load_carries_writes(start_server, tmp_path: Path) -> None:  # noqa: F811
    old = make_tiny_bundle(tmp_path / "v1", seed=0)
    new = make_tiny_bundle(tmp_path / "v2", seed=1)  # another encoder, the same item ids
    assert Bundle.open(old).item_ids == Bundle.open(new).item_ids
    current, state = tmp_path / "current", tmp_path / "state"
    os.symlink(old, current)
    server = start_server(current, state_dir=state)
    address = f"127.0.0.1:{server.port}"
    stop, errors, calls = threading.Event(), [], []
    threads = [threading.Thread(target=hammer, args=(address, stop, errors, calls)) for _ in range(4)]
    with RecommenderClient(address) as client:
        client.add_items(["new-1"], texts=["pen ink"], metadata=[{"brand": "Acme"}])
        client.add_items(["garden-1"], texts=["rake rake"])
        client.add_items(["vec-only"], vectors=np.ones((1, 16), np.float32))
        client.delete_items(["office-0"])
        for t in threads:
            t.start()
        wait_for(calls, 20, errors)
        point(current, new)
        assert server.reload() is True
        wait_for(calls, len(calls) + 20, errors)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]  # no request failed during the swap

        reference = Recommender.load(new)
        assert int(client.model_info()["catalogue_size"]) == 120  # office-0 gone, new-1 in, vec-only dropped
        for item, text in (("new-1", "pen ink"), ("garden-1", "rake rake")):
            got = client.get_item(item)
            assert got.text == text
            np.testing.assert_allclose(got.vector, reference.embed_texts([text])[0], atol=1e-6)  # the new encoder
        assert client.get_item("new-1").metadata == {"brand": "Acme"}
        for gone in ("office-0", "vec-only"):
            assert gone not in {r.item_id for r in client.search("pen", k=120)}
    assert json.loads((state / "state.json").read_text())["bundle"] == Bundle.open(new).sha256  # it moved over
    assert not [p for p in tmp_path.iterdir() if ".rebase-" in p.name]


def test_swap_to_a_rebuilt_catalogue_keeps_vector_only_items(start_server, tmp_path: Path) -> None:  # noqa: F811
    """The nightly path `lmrec embed` + `lmrec index build` keeps the encoder: vectors carry over."""
    old = make_tiny_bundle(tmp_path / "v1")
    b = Bundle.open(old)
    np.save(tmp_path / "v.npy", np.asarray(b.item_vectors))
    (tmp_path / "v.ids.txt").write_text("".join(f"{i}\n" for i in b.item_ids))
    rebuilt = tmp_path / "v1-rebuilt"
    build_bundle_index(old, tmp_path / "v.npy", rebuilt, {"M": 8}, progress=False)
    current, state = tmp_path / "current", tmp_path / "state"
    os.symlink(old, current)
    server = start_server(current, state_dir=state)
    vector = np.random.default_rng(0).normal(size=16).astype(np.float32)
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        client.add_items(["vec-only"], vectors=vector[None, :])
        point(current, rebuilt)
        assert server.reload() is True
        np.testing.assert_allclose(client.get_item("vec-only").vector, vector / np.linalg.norm(vector), atol=1e-6)
        assert int(client.model_info()["catalogue_size"]) == 121
