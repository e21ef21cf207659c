"""The evaluation protocol of ../shared/data/README.md: splits, full-ranking metrics, bootstrap CIs."""

from ._harness import FitContext, Scorer, evaluate
from ._metrics import METRICS, MethodResult, NonFiniteScores, paired_bootstrap, per_user_metrics, ranks_and_topk
from ._splits import SPLITS, Cases, Split, make_split, training_items

__all__ = [
    "FitContext", "Scorer", "evaluate", "METRICS", "MethodResult", "NonFiniteScores", "paired_bootstrap",
    "per_user_metrics", "ranks_and_topk", "SPLITS", "Cases", "Split", "make_split", "training_items",
]
