"""Metric correctness on hand-computed cases, and the guards against flattering a broken model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmrec.evaluation import (
    Cases,
    MethodResult,
    NonFiniteScores,
    evaluate,
    paired_bootstrap,
    per_user_metrics,
    ranks_and_topk,
)


def rank(scores, history, target):
    r, _ = ranks_and_topk(np.array([scores], dtype=np.float32), [np.array(history, dtype=np.int64)], np.array([target]))
    return int(r[0])


def test_rank_excludes_history_items():
    # item 0 scores highest but is in the history: the target (item 3) ranks first
    assert rank([0.9, 0.5, 0.1, 0.7], [0], 3) == 0
    assert rank([0.9, 0.5, 0.1, 0.7], [], 3) == 1


def test_ties_count_against_the_target():
    assert rank([0.5, 0.5, 0.5, 0.5], [], 2) == 3
    assert rank([0.5, 0.5, 0.5, 0.5], [0], 2) == 2
    assert rank([0.1, 0.5, 0.5, 0.2], [], 1) == 1


def test_target_in_history_is_still_ranked():
    # repeat consumption: the target itself is never excluded
    assert rank([0.1, 0.9, 0.3], [1, 2], 1) == 0


def test_non_finite_scores_are_an_error_not_a_perfect_score():
    with pytest.raises(NonFiniteScores, match="non-finite"):
        rank([np.nan, np.nan, np.nan], [], 0)
    with pytest.raises(NonFiniteScores):
        rank([0.1, np.inf, 0.3], [], 0)


def test_per_user_values_match_hand_computation():
    m = per_user_metrics(np.array([0, 2, 9, 10, 19, 20]))
    assert m["recall@10"].tolist() == [1, 1, 1, 0, 0, 0]
    assert m["recall@20"].tolist() == [1, 1, 1, 1, 1, 0]
    assert m["ndcg@10"][0] == 1.0
    assert m["ndcg@10"][1] == pytest.approx(0.5)  # 1 / log2(2 + 2)
    assert m["ndcg@10"][2] == pytest.approx(1 / math.log2(11))
    assert m["ndcg@10"][3] == 0.0
    assert m["ndcg@20"][3] == pytest.approx(1 / math.log2(12))
    assert m["precision@10"].tolist() == pytest.approx([0.1, 0.1, 0.1, 0, 0, 0])
    assert m["f1@10"][0] == pytest.approx(2 * 0.1 * 1 / 1.1)
    assert m["mrr"].tolist() == pytest.approx([1, 1 / 3, 1 / 10, 1 / 11, 1 / 20, 1 / 21])


def test_evaluate_end_to_end_and_coverage():
    # 3 users, 5 items; a scorer that always prefers higher item index
    cases = Cases(np.arange(3), [np.array([4]), np.array([0]), np.array([1, 2])], np.array([3, 0, 4]))
    res = evaluate(lambda h: np.tile(np.arange(5, dtype=np.float32), (len(h), 1)), cases, n_items=5)
    # user 0: item 4 excluded, target 3 is top → rank 0; user 1: target 0 in history, lowest → rank 4;
    # user 2: target 4 top → rank 0
    assert res.values["mrr"].tolist() == pytest.approx([1.0, 0.2, 1.0])
    s = res.summary()
    assert s["users"] == 3
    assert s["coverage@10"] == 1.0  # every item appears in some top-10 (catalogue of 5)
    assert s["recall@10"] == 1.0
    lo, hi = s["ci95"]["mrr"]
    assert lo <= s["mrr"] <= hi


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_users():
    rng = np.random.default_rng(0)
    small = MethodResult(per_user_metrics(rng.integers(0, 40, 100)), np.zeros((100, 10), dtype=np.int64), 50)
    large = MethodResult(per_user_metrics(rng.integers(0, 40, 10_000)), np.zeros((10_000, 10), dtype=np.int64), 50)
    for res in (small, large):
        s = res.summary()
        assert s["ci95"]["ndcg@10"][0] <= s["ndcg@10"] <= s["ci95"]["ndcg@10"][1]
    width = lambda r: np.diff(r.summary()["ci95"]["ndcg@10"])[0]  # noqa: E731
    assert width(large) < width(small) / 3


def test_paired_bootstrap():
    ranks = np.random.default_rng(1).integers(0, 30, 500)
    a = MethodResult(per_user_metrics(ranks), np.zeros((500, 10), dtype=np.int64), 50)
    better = MethodResult(per_user_metrics(np.maximum(ranks - 5, 0)), np.zeros((500, 10), dtype=np.int64), 50)
    same = paired_bootstrap(a, a)["ndcg@10"]
    assert same["diff"] == 0 and same["diff_ci95"] == [0.0, 0.0]
    up = paired_bootstrap(better, a)["ndcg@10"]
    assert up["diff"] > 0 and up["diff_ci95"][0] > 0 and up["ratio"] > 1
