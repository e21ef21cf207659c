"""Full-ranking metrics with bootstrap confidence intervals.

Ranks are computed over the whole catalogue from exact scores. History items (other than the
target itself) are excluded. Ties are broken against the target: an item scoring the same as the
target ranks above it, so a constant or broken model never looks good. Non-finite scores are an
error: NaN compares false, so a naive rank count would put the target first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import LmrecError
from ._splits import flatten

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "precision@10", "f1@10", "mrr", "coverage@10")
PER_USER = METRICS[:-1]
N_BOOTSTRAP = 1000


class NonFiniteScores(LmrecError):
    """A scorer returned NaN or infinite scores."""


def ranks_and_topk(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray,
                   k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each target among non-history items (ties against it) and each row's top-k.

    `scores` is modified in place (history items are set to -inf).
    """
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise LmrecError(f"scores: expected shape ({len(targets)}, n_items), got {scores.shape}")
    bad = ~np.isfinite(scores)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise NonFiniteScores(f"scores: {int(bad.sum())} non-finite values in {len(rows)} rows (first row {rows[0]})")
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets].copy()
    hist_rows, hist_items = flatten(histories)
    scores[hist_rows, hist_items] = -np.inf
    scores[rows, targets] = target_scores
    above = (scores > target_scores[:, None]).sum(1)
    ties = (scores == target_scores[:, None]).sum(1) - 1
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.argsort(-scores, axis=1)
    return above + ties, top


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user values of every metric except coverage (one target per user)."""
    r = ranks.astype(np.float64)
    hit10, hit20 = r < 10, r < 20
    gain = 1.0 / np.log2(r + 2.0)
    return {
        "recall@10": hit10.astype(np.float64),
        "ndcg@10": np.where(hit10, gain, 0.0),
        "recall@20": hit20.astype(np.float64),
        "ndcg@20": np.where(hit20, gain, 0.0),
        "precision@10": hit10 / 10.0,
        "f1@10": np.where(hit10, 2 * 0.1 * 1.0 / (0.1 + 1.0), 0.0),
        "mrr": 1.0 / (r + 1.0),
    }


def _resamples(n: int, seed: int, n_boot: int = N_BOOTSTRAP) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _coverage(topk: np.ndarray, n_items: int, rows: np.ndarray | None = None) -> float:
    seen = np.zeros(n_items, dtype=bool)
    seen[(topk if rows is None else topk[rows]).ravel()] = True
    return float(seen.mean())


@dataclass
class MethodResult:
    """Per-user metric values and top-10 lists of one method on one set of cases."""

    values: dict[str, np.ndarray]
    topk: np.ndarray
    n_items: int

    @property
    def users(self) -> int:
        return len(self.topk)

    def subset(self, rows: np.ndarray) -> MethodResult:
        """The result on the cases selected by `rows` (a boolean mask or indices)."""
        return MethodResult({m: v[rows] for m, v in self.values.items()}, self.topk[rows], self.n_items)

    def summary(self, seed: int = 0) -> dict:
        """Means, 95 % percentile-bootstrap intervals over users, and the user count."""
        out: dict = {m: float(self.values[m].mean()) for m in PER_USER}
        out["coverage@10"] = _coverage(self.topk, self.n_items)
        idx = _resamples(self.users, seed)
        ci: dict[str, list[float]] = {}
        for m in PER_USER:
            boot = self.values[m][idx].mean(1)
            ci[m] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        cov = np.array([_coverage(self.topk, self.n_items, rows) for rows in idx])
        ci["coverage@10"] = [float(np.percentile(cov, 2.5)), float(np.percentile(cov, 97.5))]
        out["ci95"] = ci
        out["users"] = self.users
        return {k: out[k] for k in (*METRICS, "ci95", "users")}


def paired_bootstrap(a: MethodResult, b: MethodResult, metrics: Sequence[str] = ("ndcg@10", "recall@10"),
                     seed: int = 0) -> dict[str, dict]:
    """Difference a − b and ratio a / b with 95 % intervals, resampling the same users for both."""
    if a.users != b.users:
        raise LmrecError("paired bootstrap needs the same users for both methods")
    idx = _resamples(a.users, seed)
    out = {}
    for m in metrics:
        ma, mb = a.values[m][idx].mean(1), b.values[m][idx].mean(1)
        diff = ma - mb
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(mb > 0, ma / mb, np.nan)
        out[m] = {
            "diff": float(a.values[m].mean() - b.values[m].mean()),
            "diff_ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            "ratio": float(a.values[m].mean() / b.values[m].mean()) if b.values[m].mean() > 0 else None,
            "ratio_ci95": [float(np.nanpercentile(ratio, 2.5)), float(np.nanpercentile(ratio, 97.5))]
            if np.isfinite(ratio).any() else None,
        }
    return out
