"""The ablation table of bench/ablation.sh from its bundles' manifests.

    python bench/ablation.py out/ablation        markdown table; JSON to bench/results/ablation.json

One row per (dataset, split, seed, pieces): validation NDCG@10 over every user and split by
target (warm targets, new targets: items held out of training), the untrained encoder on the
same cases, minutes of training (export excluded) and of the text stage. The +borrow row is the
+bonus bundle at bonus 0 (its manifest's calibration grid: the same training, no bonus).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ORDER = {"user": 0, "text": 1, "borrow": 2, "bonus": 3}
LABEL = {"user": "user model over frozen MiniLM", "text": "+ text (encoder fine-tuned)",
         "borrow": "+ borrowed residuals", "bonus": "+ new-item bonus (default)"}


def rows(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*/manifest.json")):
        m = re.fullmatch(r"(.+)-(warm|mixed)-s(\d+)-(\w+)", path.parent.name)
        if not m:
            continue
        manifest = json.loads(path.read_text())
        training, valid = manifest["training"], manifest["metrics"]["valid"]
        start = next(h for h in training["history"] if h["phase"] == "start")
        text = training.get("text") or {}
        out.append({
            "dataset": m[1], "split": m[2], "seed": int(m[3]), "pieces": m[4],
            "valid_ndcg@10": valid["ndcg@10"], "valid_ndcg@10_warm": valid.get("ndcg@10_warm"),
            "valid_ndcg@10_new": valid.get("ndcg@10_new"), "untrained_valid_ndcg@10": start["valid_ndcg@10"],
            "encoder": training["encoder"], "bonus": (manifest.get("new_items") or {}).get("bonus"),
            "minutes": round(training["seconds"] / 60, 1),
            "text_minutes": round(text["seconds"] / 60, 1) if text else None,
            "text_seconds_per_step": text.get("seconds_per_step"),
            "seconds_per_epoch": training.get("seconds_per_epoch"),
        })
        grid = (training.get("new_items") or {}).get("grid") or []
        if m[4] == "bonus" and grid and grid[0]["bonus"] == 0:
            out.append({**out[-1], "pieces": "borrow", "bonus": 0.0, "valid_ndcg@10": grid[0]["ndcg@10"],
                        "valid_ndcg@10_warm": grid[0]["warm"], "valid_ndcg@10_new": grid[0]["new"]})
    return sorted(out, key=lambda r: (r["dataset"], r["split"], r["seed"], ORDER.get(r["pieces"], 9)))


def _round(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(found: list[dict]) -> str:
    lines = ["| data | split | seed | pieces | valid NDCG@10 | warm targets | new targets | untrained | encoder "
             "| minutes (text) | s/epoch | s/text step |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r['dataset']} | {r['split']} | {r['seed']} | {LABEL.get(r['pieces'], r['pieces'])} "
                     f"| {_round(r['valid_ndcg@10'], 4)} | {_round(r['valid_ndcg@10_warm'], 4)} "
                     f"| {_round(r['valid_ndcg@10_new'], 4)} | {_round(r['untrained_valid_ndcg@10'], 4)} "
                     f"| {r['encoder']} | {r['minutes']} "
                     f"({r['text_minutes'] if r['text_minutes'] is not None else '–'}) "
                     f"| {_round(r['seconds_per_epoch'], 1)} | {_round(r['text_seconds_per_step'], 2)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    found = rows(Path(sys.argv[1]))
    (ROOT / "results" / "ablation.json").write_text(json.dumps(found, indent=1) + "\n")
    print(table(found))
