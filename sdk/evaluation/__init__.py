"""The evaluation protocol of ../shared/data/README.md: splits, full-ranking metrics, bootstrap CIs,
and the report every method of `lmrec eval` ends up in."""

from ._bundle_scorer import BundleScorer, check_bundle_matches
from ._harness import FitContext, Scorer, evaluate
from ._metrics import METRICS, MethodResult, NonFiniteScores, paired_bootstrap, per_user_metrics, ranks_and_topk
from ._report import build_report, format_table, plot, run_methods, write_json
from ._splits import HELD_OUT, SPLITS, Cases, Split, make_split, training_items

__all__ = [
    "FitContext", "Scorer", "evaluate", "METRICS", "MethodResult", "NonFiniteScores", "paired_bootstrap",
    "per_user_metrics", "ranks_and_topk", "SPLITS", "HELD_OUT", "Cases", "Split", "make_split", "training_items",
    "BundleScorer", "check_bundle_matches", "run_methods", "build_report", "format_table", "write_json", "plot",
]
