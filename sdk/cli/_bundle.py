"""`lmrec bundle verify`: check a bundle's manifest and every file's sha256."""

from __future__ import annotations

import argparse
import json
import sys

from .._bundle import MANIFEST, verify_bundle


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="inspect bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    v = bsub.add_parser("verify", help="check every file of a bundle against its manifest",
                        description="Prints OK and a summary, or each problem (exit status 1).")
    v.add_argument("dir", metavar="DIR", help="bundle directory")
    v.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    problems = verify_bundle(args.dir)
    if problems:
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        return 1
    with open(f"{args.dir}/{MANIFEST}", encoding="utf-8") as f:
        manifest = json.load(f)
    data = manifest.get("data") or {}
    parity = manifest.get("parity") or {}
    print(f"OK {args.dir}: {len(manifest['files'])} files verified")
    print(f"  format {manifest['format_version']}, base model {manifest.get('base_model')}, "
          f"dim {manifest.get('dim')}, max length {manifest.get('max_length')}")
    print(f"  data {data.get('spec')} ({data.get('items')} items), training {manifest.get('training') or 'none (zero-shot)'}")
    if parity:
        print("  parity " + ", ".join(f"{k} {parity[k]:.5f}" for k in
                                      ("fp32_min_cosine", "int8_mean_cosine", "int8_top10_overlap") if k in parity))
    return 0
