"""SDK latency of two revisions of lmrec, measured side by side in one run.

    python bench/bench_revisions.py --bundle B --base HEAD~1 --json bench/results/revisions.json

Each revision's sdk/ (as `lmrec`) is staged in a temporary directory from `git archive`, and the
same measurement runs in a fresh process per revision and round, alternating, so background load
hits both alike: bundle load, `embed_texts` of one short text (a live query) and of a batch of 64
item texts, and `recommend` from a history of 20 item ids (k 10, exact and through the index).
The bundle must be readable by both (a format-1 bundle is read by every version). Medians over
rounds; the report gives the working tree / base ratio of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = r"""
import json, statistics, sys, time
import numpy as np
t = time.perf_counter()
import lmrec
from lmrec import Recommender
rec = Recommender.load(sys.argv[1], device="cpu", threads=1)
load_s = time.perf_counter() - t
ids = rec.item_ids()
texts = [rec.get_item(i).text for i in ids[:64]]
rng = np.random.default_rng(0)
histories = [[ids[j] for j in rng.choice(len(ids), 20, replace=False)] for _ in range(200)]
def timed(fn, n):
    fn()
    out = []
    for _ in range(n):
        s = time.perf_counter(); fn(); out.append(time.perf_counter() - s)
    return statistics.median(out) * 1000
result = {
    "lmrec": lmrec.__file__,
    "load_s": load_s,
    "embed_1_ms": timed(lambda: rec.embed_texts(["blue gel pens, pack of 12"]), 200),
    "embed_64_ms": timed(lambda: rec.embed_texts(texts, batch_size=64), 10),
}
it = iter(histories * 12)
result["recommend_exact_ms"] = timed(lambda: rec.recommend(next(it), k=10, mode="exact"), 1000)
result["recommend_ann_ms"] = timed(lambda: rec.recommend(next(it), k=10, mode="ann"), 1000)
print(json.dumps(result))
"""


def stage(rev: str | None, into: Path) -> Path:
    """A directory whose `lmrec/` is `rev`'s sdk/ (None: the working tree, by symlinks)."""
    package = into / "lmrec"
    package.mkdir(parents=True)
    if rev is None:
        for entry in (ROOT / "sdk").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        return into
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "sdk"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into / "src", filter="data")
    for entry in (into / "src" / "sdk").iterdir():
        entry.rename(package / entry.name)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="a bundle both revisions can read")
    parser.add_argument("--base", default="HEAD", help="the revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory(prefix="lmrec-revs-") as tmp:
        paths = {"base": stage(args.base, Path(tmp) / "base"), "tree": stage(None, Path(tmp) / "tree")}
        for r in range(args.rounds):
            for name in ("base", "tree") if r % 2 == 0 else ("tree", "base"):
                proc = subprocess.run([sys.executable, "-c", MEASURE, args.bundle], capture_output=True, text=True,
                                      env={"PYTHONPATH": str(paths[name]), "OMP_NUM_THREADS": "1",
                                           "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, check=False)
                if proc.returncode:
                    raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(name, runs[name][-1], flush=True)
    keys = [k for k in runs["base"][0] if k != "lmrec"]
    medians = {name: {k: statistics.median(run[k] for run in runs[name]) for k in keys} for name in runs}
    report = {"bundle": args.bundle, "base": args.base, "rounds": args.rounds, "medians": medians,
              "tree_over_base": {k: round(medians["tree"][k] / medians["base"][k], 3) for k in keys}, "runs": runs}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"medians": medians, "tree_over_base": report["tree_over_base"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
