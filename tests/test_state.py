"""State directory, through the public API: durable log, snapshots and compaction, torn-tail
repair, crash safety. Every change goes through `Recommender` (its `Catalogue`) as a user's would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _tiny_bundle import DIM, make_tiny_bundle
from lmrec import LmrecError, Recommender, StateError

TINY_ITEMS = 120


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("state") / "tiny")


def vectors(names: list[str]) -> np.ndarray:
    """Rows whose direction encodes the name: first component over the others is hash(name) % 1000."""
    out = np.ones((len(names), DIM), dtype=np.float32)
    out[:, 0] = [float(sum(map(ord, n)) % 1000) for n in names]
    return out


def upsert(rec: Recommender, names: list[str]) -> None:
    rec.add_items(names, texts=[f"text {n}" for n in names], vectors=vectors(names),
                  metadata=[{"n": n, "tags": ["é", 1]} for n in names])


def segment(path: Path) -> Path:
    (seg,) = sorted(path.glob("wal-*.log"))
    return seg



def test_append_and_replay_roundtrip(bundle, tmp_path):
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert rec.state_report == [] and rec.pending_changes == 0
        upsert(rec, ["a", "b"])
        rec.delete_items(["a"])
        assert rec.pending_changes == 2
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert "a" not in rec and "b" in rec and len(rec) == TINY_ITEMS + 1
        item = rec.get_item("b")
        assert item.text == "text b" and item.metadata == {"n": "b", "tags": ["é", 1]}
        want = vectors(["b"])[0]
        np.testing.assert_allclose(item.vector, want / np.linalg.norm(want), rtol=1e-6)
        assert item.vector.dtype == np.float32
        assert rec.pending_changes == 2  # numbering continues
        rec.delete_items(["b"])
        assert rec.pending_changes == 3


@pytest.mark.parametrize("damage", ["cut", "zeros", "final-checksum"])
def test_torn_tail_is_truncated_and_reported(bundle, tmp_path, damage):
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        for n in range(3):
            upsert(rec, [f"i{n}"])
    seg = segment(tmp_path / "s")
    data = seg.read_bytes()
    if damage == "cut":
        seg.write_bytes(data[:-7])
    elif damage == "zeros":
        seg.write_bytes(data + b"\0" * 100)
    else:
        seg.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    kept = 3 if damage == "zeros" else 2
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert [f"i{n}" in rec for n in range(3)] == [n < kept for n in range(3)]
        assert len(rec.state_report) == 1 and "truncated a torn final record" in rec.state_report[0]
        upsert(rec, ["next"])
        assert rec.pending_changes == kept + 1
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert rec.state_report == [] and "next" in rec


@pytest.mark.parametrize("where", [13, 20])  # inside the first header, inside the first payload
def test_damage_in_the_middle_is_an_error(bundle, tmp_path, where):
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        for n in range(3):
            upsert(rec, [f"i{n}"])
    seg = segment(tmp_path / "s")
    data = bytearray(seg.read_bytes())
    data[where if where > 12 else 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupted"):
        Recommender.load(bundle, state_dir=tmp_path / "s")


def test_snapshot_compacts_and_replays_only_later_changes(bundle, tmp_path):
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        upsert(rec, ["a"])
        upsert(rec, ["b"])
        snap = rec.snapshot()
        assert snap is not None and snap.name == f"snapshot-{2:020d}"
        assert rec.snapshot() is None  # nothing new
        rec.delete_items(["a"])
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["LOCK", f"snapshot-{2:020d}", "state.json", f"wal-{3:020d}.log"]
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert rec.pending_changes == 1  # the snapshot holds a and b; the log only the delete
        assert "a" not in rec and "b" in rec
        upsert(rec, ["c"])
        rec.snapshot()
    assert sorted(p.name for p in (tmp_path / "s").glob("snapshot-*")) == [f"snapshot-{4:020d}"]
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert {"b", "c"} <= set(rec.item_ids()) and "a" not in rec and rec.pending_changes == 0


def test_unfinished_snapshot_is_removed_and_missing_snapshot_detected(bundle, tmp_path):
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        upsert(rec, ["a"])
        rec.snapshot()
        upsert(rec, ["b"])
    (tmp_path / "s" / ".snapshot-00000000000000000009.tmp-1234").mkdir()
    with Recommender.load(bundle, state_dir=tmp_path / "s") as rec:
        assert rec.state_report == ["removed unfinished snapshot .snapshot-00000000000000000009.tmp-1234"]
    for snap in (tmp_path / "s").glob("snapshot-*"):
        for f in sorted(snap.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        snap.rmdir()
    with pytest.raises(StateError, match="records are missing"):
        Recommender.load(bundle, state_dir=tmp_path / "s")


def test_wrong_bundle_busy_and_foreign_directories(bundle, tmp_path):
    rec = Recommender.load(bundle, state_dir=tmp_path / "s")
    with pytest.raises(StateError, match="in use by another process"):
        Recommender.load(bundle, state_dir=tmp_path / "s")
    rec.close()
    other = make_tiny_bundle(tmp_path / "other", seed=1)
    with pytest.raises(StateError, match="belongs to another bundle"):
        Recommender.load(other, state_dir=tmp_path / "s")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StateError, match="not an lmrec state directory"):
        Recommender.load(bundle, state_dir=tmp_path / "junk")
    with pytest.raises(LmrecError, match="closed"):
        rec.delete_items(["office-0"])


CHILD = r"""
import json, sys
import numpy as np
from lmrec import Recommender

bundle, path, trial = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = Recommender.load(bundle, state_dir=path)
live = {i for i in rec.item_ids() if i.startswith("t")}
print("R", flush=True)
rng = np.random.default_rng(trial)
n = 0
while True:
    if live and rng.random() < 0.2:
        names = sorted(rng.choice(sorted(live), size=min(len(live), 3), replace=False).tolist())
        print("W", json.dumps(names), flush=True)
        rec.delete_items(names)
        print("D", flush=True)
        live -= set(names)
    else:
        names = [f"t{trial}-{n + j}" for j in range(int(rng.integers(1, 200)))]
        n += len(names)
        vectors = np.ones((len(names), 16), dtype=np.float32)
        vectors[:, 0] = [int(x.split("-")[1]) for x in names]
        print("W", json.dumps(names), flush=True)
        rec.add_items(names, texts=names, vectors=vectors)
        print("A", flush=True)
        live |= set(names)
    if rng.random() < 0.05:
        rec.snapshot()
"""


def test_sigkill_at_random_moments_loses_no_acknowledged_change(bundle, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s"
    present: set[str] = set()
    for trial in range(16):
        log = tmp_path / f"child{trial}.out"
        with open(log, "w") as out:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(bundle), str(path), str(trial)], stdout=out,
                                     stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while not log.read_text().startswith("R") and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)  # loaded: from here on it only writes
            time.sleep(0.35 + rng.uniform(0, 0.4))
            os.kill(child.pid, signal.SIGKILL)
            _, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
        in_flight: set[str] | None = None
        for line in log.read_text().splitlines():
            if line.startswith("W "):
                in_flight = set(json.loads(line[2:]))
            elif line in ("A", "D") and in_flight is not None:
                present = present | in_flight if line == "A" else present - in_flight
                in_flight = None
        with Recommender.load(bundle, state_dir=path) as rec:  # never fails
            got = {i for i in rec.item_ids() if i.startswith("t")}
            if got:
                sample = sorted(got)[:50]
                v = rec.catalogue.vectors(sample)
                np.testing.assert_allclose(v[:, 0] / v[:, 1], [int(x.split("-")[1]) for x in sample], rtol=1e-5)
        if in_flight is None or got == present:
            assert got == present, f"trial {trial}: lost {sorted(present - got)[:5]}, extra {sorted(got - present)[:5]}"
        else:  # the change being written when killed may or may not have landed, but not half of it
            assert got in (present | in_flight, present - in_flight), f"trial {trial}"
            present = got
    assert len(present) > 100  # the children did real work
