"""State directory: durable log, snapshots and compaction, torn-tail repair, crash safety."""

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

from lmrec._state import Delete, StateDir, StateError, Upsert, open_state

BUNDLE = "bundle-sha"


def upsert(names: list[str], dim: int = 4) -> Upsert:
    vectors = np.array([[float(hash(n) % 1000), 1.0, 2.0, 3.0][:dim] for n in names], dtype=np.float32)
    return Upsert(names, vectors, [f"text {n}" for n in names], [{"n": n, "tags": ["é", 1]} for n in names])


def segment(path: Path) -> Path:
    (seg,) = sorted(path.glob("wal-*.log"))
    return seg


def test_append_and_replay_roundtrip(tmp_path):
    state, rec = open_state(tmp_path / "s", BUNDLE)
    assert rec.snapshot is None and rec.changes == [] and rec.report == []
    assert state.append(upsert(["a", "b"])) == 1
    assert state.append(Delete(["a"])) == 2
    state.close()
    state, rec = open_state(tmp_path / "s", BUNDLE)
    first, second = rec.changes
    assert isinstance(first, Upsert) and first.ids == ["a", "b"] and first.texts == ["text a", "text b"]
    assert first.metas[1] == {"n": "b", "tags": ["é", 1]}
    np.testing.assert_array_equal(first.vectors, upsert(["a", "b"]).vectors)
    assert first.vectors.dtype == np.float32
    assert second == Delete(["a"])
    assert state.append(Delete(["b"])) == 3  # numbering continues
    state.close()


@pytest.mark.parametrize("damage", ["cut", "zeros", "final-checksum"])
def test_torn_tail_is_truncated_and_reported(tmp_path, damage):
    state, _ = open_state(tmp_path / "s", BUNDLE)
    for n in range(3):
        state.append(upsert([f"i{n}"]))
    state.close()
    seg = segment(tmp_path / "s")
    data = seg.read_bytes()
    if damage == "cut":
        seg.write_bytes(data[:-7])
    elif damage == "zeros":
        seg.write_bytes(data + b"\0" * 100)
    else:
        seg.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    state, rec = open_state(tmp_path / "s", BUNDLE)
    kept = 3 if damage == "zeros" else 2
    assert [c.ids for c in rec.changes] == [[f"i{n}"] for n in range(kept)]
    assert len(rec.report) == 1 and "truncated a torn final record" in rec.report[0]
    assert state.append(upsert(["next"])) == kept + 1
    state.close()
    state, rec = open_state(tmp_path / "s", BUNDLE)
    assert rec.report == [] and rec.changes[-1].ids == ["next"]
    state.close()


@pytest.mark.parametrize("where", [13, 20])  # inside the first header, inside the first payload
def test_damage_in_the_middle_is_an_error(tmp_path, where):
    state, _ = open_state(tmp_path / "s", BUNDLE)
    for n in range(3):
        state.append(upsert([f"i{n}"]))
    state.close()
    seg = segment(tmp_path / "s")
    data = bytearray(seg.read_bytes())
    data[where if where > 12 else 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupted"):
        open_state(tmp_path / "s", BUNDLE)


def test_snapshot_compacts_and_replays_only_later_changes(tmp_path):
    state, _ = open_state(tmp_path / "s", BUNDLE)
    state.append(upsert(["a"]))
    state.append(upsert(["b"]))
    snap = state.snapshot(lambda d: (d / "ids.json").write_text('["a", "b"]'))
    assert snap is not None and snap.name == f"snapshot-{2:020d}"
    assert state.snapshot(lambda d: None) is None  # nothing new
    state.append(Delete(["a"]))
    state.close()
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["LOCK", f"snapshot-{2:020d}", "state.json", f"wal-{3:020d}.log"]
    state, rec = open_state(tmp_path / "s", BUNDLE)
    assert rec.snapshot == snap and rec.snapshot_seq == 2
    assert json.loads((rec.snapshot / "ids.json").read_text()) == ["a", "b"]
    assert rec.changes == [Delete(["a"])]
    state.append(upsert(["c"]))
    state.snapshot(lambda d: None)
    state.close()
    assert sorted(p.name for p in (tmp_path / "s").glob("snapshot-*")) == [f"snapshot-{4:020d}"]


def test_unfinished_snapshot_is_removed_and_missing_snapshot_detected(tmp_path):
    state, _ = open_state(tmp_path / "s", BUNDLE)
    state.append(upsert(["a"]))
    state.snapshot(lambda d: None)
    state.append(upsert(["b"]))
    state.close()
    (tmp_path / "s" / ".snapshot-00000000000000000009.tmp-1234").mkdir()
    state, rec = open_state(tmp_path / "s", BUNDLE)
    assert rec.report == ["removed unfinished snapshot .snapshot-00000000000000000009.tmp-1234"]
    state.close()
    for snap in (tmp_path / "s").glob("snapshot-*"):
        for f in snap.iterdir():
            f.unlink()
        snap.rmdir()
    with pytest.raises(StateError, match="records are missing"):
        open_state(tmp_path / "s", BUNDLE)


def test_wrong_bundle_busy_and_foreign_directories(tmp_path):
    state, _ = open_state(tmp_path / "s", BUNDLE)
    with pytest.raises(StateError, match="in use by another process"):
        StateDir(tmp_path / "s", BUNDLE)
    state.close()
    with pytest.raises(StateError, match="belongs to another bundle"):
        StateDir(tmp_path / "s", "other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StateError, match="not an lmrec state directory"):
        StateDir(tmp_path / "junk", BUNDLE)
    with pytest.raises(StateError, match="not open"):
        StateDir(tmp_path / "s", BUNDLE).append(Delete(["a"]))


CHILD = r"""
import json, sys
import numpy as np
from lmrec._state import Delete, Upsert, open_state

path, trial = sys.argv[1], int(sys.argv[2])
state, rec = open_state(path, "bundle-sha")
live = set(json.loads((rec.snapshot / "ids.json").read_text())) if rec.snapshot else set()
for c in rec.changes:
    live = live | set(c.ids) if isinstance(c, Upsert) else live - set(c.ids)
rng = np.random.default_rng(trial)
n = 0
while True:
    if live and rng.random() < 0.2:
        change = Delete(sorted(rng.choice(sorted(live), size=min(len(live), 3), replace=False).tolist()))
    else:
        names = [f"t{trial}-{n + j}" for j in range(int(rng.integers(1, 200)))]
        n += len(names)
        vectors = np.array([[int(x.split("-")[1])] * 64 for x in names], dtype=np.float32)
        change = Upsert(names, vectors, names, [{}] * len(names))
    print("W", json.dumps(change.ids), flush=True)
    state.append(change)
    print("A" if isinstance(change, Upsert) else "D", flush=True)
    live = live | set(change.ids) if isinstance(change, Upsert) else live - set(change.ids)
    if rng.random() < 0.05:
        state.snapshot(lambda d: (d / "ids.json").write_text(json.dumps(sorted(live))))
"""


def test_sigkill_at_random_moments_loses_no_acknowledged_change(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s"
    present: set[str] = set()
    for trial in range(16):
        log = tmp_path / f"child{trial}.out"
        with open(log, "w") as out:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(trial)], stdout=out,
                                     stderr=subprocess.PIPE)
            time.sleep(0.35 + rng.uniform(0, 0.4))
            os.kill(child.pid, signal.SIGKILL)
            _, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
        lines = log.read_text().splitlines()
        in_flight: tuple[str, set[str]] | None = None
        for line in lines:
            if line.startswith("W "):
                in_flight = ("?", set(json.loads(line[2:])))
            elif line in ("A", "D") and in_flight is not None:
                present = present | in_flight[1] if line == "A" else present - in_flight[1]
                in_flight = None
        state, rec = open_state(path, BUNDLE)  # never fails
        got = set(json.loads((rec.snapshot / "ids.json").read_text())) if rec.snapshot else set()
        for change in rec.changes:
            if isinstance(change, Upsert):
                assert (change.vectors[:, 0] == [int(x.split("-")[1]) for x in change.ids]).all()
                got |= set(change.ids)
            else:
                got -= set(change.ids)
        state.close()
        if in_flight is None or got == present:
            assert got == present, f"trial {trial}: lost {sorted(present - got)[:5]}, extra {sorted(got - present)[:5]}"
        else:  # the change being written when killed may or may not have landed, but not half of it
            assert got in (present | in_flight[1], present - in_flight[1]), f"trial {trial}"
            present = got
    assert len(present) > 100  # the children did real work
