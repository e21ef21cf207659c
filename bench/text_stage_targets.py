"""The text stage's epochs, scored apart on warm and on new targets: which epoch would each choice keep?

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/text_stage_targets.py \\
        --data amazon:../shared/data/amazon-office --seed 0 \\
        --json bench/results/text-stage-targets/amazon-office-s0.json
    python bench/text_stage_targets.py summary bench/results/text-stage-targets

The default text stage (`lmrec.trainer.finetune_text`, the default TrainConfig; `--set KEY=VALUE`
for another setting) on the mixed split's training part (the cold split's), run for all of its
epochs (no early stop): at the base encoder and every validation (each second epoch), last-item
NDCG@10 of the stage's catalogue vectors on validation and on test, each split into cases whose
target is a warm item and cases whose target is a new (held-out) item. The summary compares the
epoch kept by the stage's rule (best validation over all cases, as `lmrec train` on a split with
new items) with the epoch a rule over new-target validation cases alone would keep, and with the
base encoder, on test's new targets. `--whole` also scores every validation's encoder on whole
texts (what the user model trains on), not only on the stage's states cut at `text_max_length`.
One torch thread; 4–12 minutes a run on this host (`--whole`: about a minute more a validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from lmrec.data import load_dataset
from lmrec.evaluation import evaluate, make_split, training_items
from lmrec.trainer import TEXT_TEMPERATURES, TorchEncoder, finetune_text, load_config, set_torch_threads


def run(args: argparse.Namespace) -> None:
    set_torch_threads(1)
    data = load_dataset(args.data)
    split = make_split(data, "mixed", args.seed)
    cfg = load_config(None, **dict(_setting(item) for item in args.set))
    if cfg.text_temperature is None:  # one temperature's whole course (the stage's choice needs real validation)
        cfg = cfg.with_(text_temperature=TEXT_TEMPERATURES[0])
    rows: list[dict] = []

    def score(v: np.ndarray, part: str) -> dict:
        cases = getattr(split, part)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        values = evaluate(lambda hs: v[[h[-1] for h in hs]] @ v.T, cases, split.n_items).values["ndcg@10"]
        new = split.new_targets(cases)
        return {"warm": float(values[~new].mean()), "new": float(values[new].mean()), "all": float(values.mean()),
                "new_users": int(new.sum())}

    def validate(vectors: np.ndarray) -> float:
        rows.append({"epoch": 2 * len(rows), "valid": score(vectors, "valid"), "test": score(vectors, "test")})
        if args.whole:  # what the user model and the export see: whole texts (max_length), every layer
            training = encoder.model.training
            encoder.model.eval()
            full = encoder.encode(data.item_texts)
            encoder.model.train(training)
            rows[-1]["whole"] = {"valid": score(full, "valid"), "test": score(full, "test")}
        print(json.dumps(rows[-1]), flush=True)
        return float(len(rows))  # always a new best: the stage runs all of its epochs

    encoder = TorchEncoder(cfg.base_model, max_length=cfg.max_length)
    result = finetune_text(encoder, data.item_texts, split.train, training_items(split), cfg, validate, args.seed,
                           progress=False, log=lambda line: print(line, flush=True))
    report = {"data": data.name, "seed": args.seed, "set": args.set, "rows": rows,
              "seconds": result.report["seconds"], "seconds_per_epoch": result.report["seconds_per_epoch"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


def _setting(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def summary(folder: Path) -> None:
    by_data: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        by_data.setdefault(report["data"], []).append(report)
    print("| dataset, seed | epoch kept: all valid / new valid | test new: base / all-valid rule / new-valid rule "
          "| test warm: base / all-valid rule / new-valid rule | epochs below the base on test new / warm |")
    print("|---|---|---|---|---|")
    for name, reports in by_data.items():
        means = np.zeros((2, 3))
        for r in sorted(reports, key=lambda r: r["seed"]):
            rows = r["rows"]
            picks = [rows[0], max(rows, key=lambda x: x["valid"]["all"]), max(rows, key=lambda x: x["valid"]["new"])]
            new = [p["test"]["new"] for p in picks]
            warm = [p["test"]["warm"] for p in picks]
            means += np.array([new, warm]) / len(reports)
            below = [sum(x["test"][t] < rows[0]["test"][t] for x in rows[1:]) for t in ("new", "warm")]
            print(f"| {name}, {r['seed']} | {picks[1]['epoch']} / {picks[2]['epoch']} | "
                  f"{' / '.join(f'{x:.4f}' for x in new)} | {' / '.join(f'{x:.4f}' for x in warm)} | "
                  f"{below[0]} / {below[1]} of {len(rows) - 1} |")
        print(f"| {name}, mean | | {' / '.join(f'{x:.4f}' for x in means[0])} | "
              f"{' / '.join(f'{x:.4f}' for x in means[1])} | |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "summary":
        summary(Path(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig setting of the stage other than the default (text_lr, token_dropout, ...)")
    p.add_argument("--whole", action="store_true",
                   help="also score each validation's encoder on whole texts (`max_length` tokens, all layers), "
                        "as the user model sees it, beside the stage's cached, shortened states")
    run(p.parse_args())


if __name__ == "__main__":
    main()
