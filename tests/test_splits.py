"""Splits follow the shared protocol and are deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest
from lmrec import DataError, load_dataset
from lmrec.evaluation import make_split, training_items

DATA = "synthetic:items=400,users=300,seed=3"


def test_warm_split_is_leave_one_out():
    data = load_dataset(DATA)
    split = make_split(data, "warm", seed=0)
    eligible = [u for u, s in enumerate(data.sequences) if len(s) >= 3]
    assert split.test.users.tolist() == eligible
    for case, (u, hist, target) in enumerate(
        zip(split.test.users, split.test.histories, split.test.targets, strict=True)
    ):
        seq = data.sequences[u]
        assert target == seq[-1]
        assert hist.tolist() == seq[:-1].tolist()  # the validation item is in the test history
        assert split.valid.targets[case] == seq[-2]
        assert split.valid.histories[case].tolist() == seq[:-2].tolist()
    assert sum(len(s) for s in split.train) == sum(len(data.sequences[u]) - 2 for u in eligible)


def test_cold_split_keeps_cold_items_out_of_training():
    data = load_dataset(DATA)
    split = make_split(data, "cold", seed=7)
    cold = set(split.cold_items.tolist())
    assert len(cold) == round(0.2 * data.n_items)
    assert not cold & set(np.concatenate(split.train).tolist())
    assert not training_items(split)[split.cold_items].any()
    assert len(split.test) > 0 and set(split.test.targets.tolist()) <= cold
    assert set(split.valid.targets.tolist()) <= cold
    for u, hist in zip(split.test.users, split.test.histories, strict=True):
        assert hist.tolist() == data.sequences[u][:-1].tolist()  # full prefix, cold items included


@pytest.mark.parametrize("kind", ["warm", "cold", "temporal"])
def test_splits_are_deterministic_for_a_seed(kind):
    data = load_dataset(DATA)
    a, b = make_split(data, kind, seed=5), make_split(data, kind, seed=5)
    assert a.test.targets.tolist() == b.test.targets.tolist()
    assert [s.tolist() for s in a.train] == [s.tolist() for s in b.train]
    assert a.cold_items.tolist() == b.cold_items.tolist()


def test_cold_split_changes_with_the_seed():
    data = load_dataset(DATA)
    assert make_split(data, "cold", seed=1).cold_items.tolist() != make_split(data, "cold", seed=2).cold_items.tolist()


def test_temporal_split_respects_the_cut():
    data = load_dataset(DATA)
    split = make_split(data, "temporal", seed=0)
    cut = split.params["test_cut"]
    for u, hist in zip(split.test.users, split.test.histories, strict=True):
        ts = data.timestamps[u]
        assert ts[len(hist)] > cut and (len(hist) == 0 or ts[len(hist) - 1] <= cut)


def test_temporal_split_needs_timestamps(tmp_path):
    (tmp_path / "x.item.json").write_text('{"a": {"title": "A"}, "b": {"title": "B"}}')
    (tmp_path / "x.inter.json").write_text('{"u": ["a", "b", "a"]}')
    with pytest.raises(DataError, match="timestamps"):
        make_split(load_dataset(f"amazon:{tmp_path}"), "temporal")


def test_unknown_split_kind():
    with pytest.raises(DataError, match="split 'random'"):
        make_split(load_dataset(DATA), "random")


def test_mixed_split_holds_out_the_cold_items_and_evaluates_everyone():
    data = load_dataset(DATA)
    cold, mixed, warm = (make_split(data, kind, seed=7) for kind in ("cold", "mixed", "warm"))
    assert mixed.cold_items.tolist() == cold.cold_items.tolist()
    assert [s.tolist() for s in mixed.train] == [s.tolist() for s in cold.train]  # trains exactly as cold
    assert mixed.test.users.tolist() == warm.test.users.tolist()  # every user, whatever the target
    assert mixed.test.targets.tolist() == warm.test.targets.tolist()
    new = mixed.new_targets(mixed.test)
    assert 0 < new.sum() < len(new) and set(mixed.test.targets[new].tolist()) <= set(cold.cold_items.tolist())
    assert new.sum() == len(cold.test) and mixed.describe()["cold_share"] == 0.2


def test_eval_reports_mixed_metrics_by_target(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "lmrec", "eval", "--data", DATA, "--methods", "pop", "--split",
                           "mixed", "--seed", "7", "--json", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())["results"]["pop"]
    warm, new = r["by_target"]["warm"], r["by_target"]["new"]
    assert set(warm) == set(new) == {*r} - {"params", "fit_seconds", "eval_seconds", "by_target"}
    assert warm["users"] + new["users"] == r["users"]
    assert abs((warm["ndcg@10"] * warm["users"] + new["ndcg@10"] * new["users"]) / r["users"] - r["ndcg@10"]) < 1e-9
    assert new["ndcg@10"] == 0  # popularity counts training interactions: a new item has none


@pytest.mark.parametrize("kind", ["warm", "mixed"])
def test_one_interaction_shorter_its_test_is_the_full_splits_validation(kind):
    data = load_dataset(DATA)
    full, shorter = make_split(data, kind, seed=5), make_split(data, kind, seed=5, drop_last=1)
    assert np.array_equal(shorter.cold_items, full.cold_items)  # the same held-out items
    at = {u: n for n, u in enumerate(full.valid.users.tolist())}
    assert 0 < len(shorter.test) < len(full.valid)  # users down to 2 interactions drop out
    for u, hist, target in zip(shorter.test.users, shorter.test.histories, shorter.test.targets, strict=True):
        assert target == full.valid.targets[at[u]] and hist.tolist() == full.valid.histories[at[u]].tolist()
        assert shorter.valid.histories[list(shorter.valid.users).index(u)].tolist() == hist[:-1].tolist()
    assert sum(len(s) for s in shorter.train) < sum(len(s) for s in full.train)
    with pytest.raises(DataError, match="drop_last applies to the leave-one-out splits only"):
        make_split(data, "temporal", drop_last=1)
    with pytest.raises(ValueError, match="drop_last must be an integer >= 0"):
        make_split(data, kind, drop_last=-1)
