"""Validation against test NDCG@10 of the baselines that choose nothing on validation.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/valid_test.py \\
        --data amazon:../shared/data/amazon-office movielens:../shared/data/movielens-latest-small

Leave-one-out puts the validation target right after the training data and the test target one
step later. A model fitted to the training interactions and chosen on validation meets a test
target that has drifted further; the untrained text encoder does not depend on that distance.
So a weight between the two chosen on validation favours the fitted side. This prints the
test/validation ratio of popularity, ItemKNN (its one setting, n in {1, 20}, chosen on
validation) and the zero-shot encoder (the warm split, seed 0; the harness of `lmrec eval`), to
set beside the fitted models' (RESULTS, "The encoder's similarity on every item, again").
"""

from __future__ import annotations

import argparse

from lmrec.data import load_dataset
from lmrec.evaluation import FitContext, evaluate, make_split
from lmrec.trainer.baselines import BASELINES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--methods", default="pop,itemknn,zeroshot")
    args = p.parse_args()
    for spec in args.data:
        data = load_dataset(spec)
        split = make_split(data, "warm", 0)
        ctx = FitContext(data, split, seed=0, progress=False)
        for name in args.methods.split(","):
            model = BASELINES[name]()
            model.fit(ctx)
            ndcg = [float(evaluate(model.score, part, split.n_items).values["ndcg@10"].mean())
                    for part in (split.valid, split.test)]
            print(f"{data.name:24s} {name:10s} valid {ndcg[0]:.4f} test {ndcg[1]:.4f} "
                  f"test/valid {ndcg[1] / ndcg[0]:.3f}", flush=True)


if __name__ == "__main__":
    main()
