"""`lmrec data stats`: what a data spec loads to, and what the loader skipped."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..data import DEFAULT_SPEC, load_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    s = dsub.add_parser("stats", help="counts, sequence lengths and load report of a data spec")
    s.add_argument("--data", default=DEFAULT_SPEC,
                   help="data spec KIND:PATH (movielens, amazon, recbole, jsonl, synthetic:items=N,users=M,seed=S)")
    s.add_argument(
        "--template", default=None, help="item text template fields=a,b;sep=…;max_chars=N (default: the loader's)"
    )
    s.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    s.set_defaults(run=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    data = load_dataset(args.data, args.template)
    lengths = np.array([len(s) for s in data.sequences]) if data.sequences else np.zeros(1)
    text_lengths = np.array([len(t) for t in data.item_texts])
    stats = {
        **data.summary(),
        "users_with_3_or_more": int((lengths >= 3).sum()),
        "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        "text_chars": {
            "min": int(text_lengths.min()),
            "median": float(np.median(text_lengths)),
            "max": int(text_lengths.max()),
        },
        "timestamps": data.timestamps is not None,
        "template": data.template,
        "fingerprint": data.fingerprint(),
        "report": dict(data.report.counts),
    }
    for key, value in stats.items():
        print(f"{key:22} {value}")
    for line in data.report.lines():
        print(f"skipped/repaired       {line}")
    print(f"example item text      {data.item_texts[0]!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=2)
    return 0
