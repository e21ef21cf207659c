"""`lmrec eval`: every method, baselines and bundles alike, through one harness."""

from __future__ import annotations

import argparse
from typing import Any

from .._errors import LmrecError, require
from ..data import DEFAULT_SPEC, load_dataset
from ._args import positive_int
from ._checks import bundle_dir

BASELINES = ("pop", "itemknn", "zeroshot", "sasrec")
BUNDLE_METHODS = {"lmrec": "auto", "lmrec-fp32": "fp32", "lmrec-plain": "fp32"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="full-ranking leave-one-out evaluation of methods on a dataset",
                       description="Fits each method on the training part of the split, chooses its settings on "
                                   "validation, and reports test metrics with 95%% bootstrap intervals.")
    p.add_argument(
        "--data", default=DEFAULT_SPEC, help="data spec KIND:PATH (default: %(default)s, the synthetic default)"
    )
    p.add_argument("--methods", default="pop,itemknn,zeroshot",
                   help=f"comma-separated methods: {', '.join(BASELINES)}, lmrec, lmrec-fp32, lmrec-plain (the fp32 "
                        "bundle with its new-item rules off: items without a residual get neither a borrowed one "
                        "nor the bonus) (default: %(default)s)")
    p.add_argument(
        "--split", default="warm", choices=("warm", "cold", "mixed", "temporal"),
        help="evaluation split (default: warm); cold: only users whose target is a held-out item; mixed: every user, "
             "with the cold split's held-out items"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split, training and bootstrap (default: 0)")
    p.add_argument(
        "--cold-share", type=float, default=0.2, help="share of items held out by the cold split (default: 0.2)"
    )
    p.add_argument("--bundle", default=None, help="bundle directory scored by the lmrec and lmrec-fp32 methods")
    p.add_argument(
        "--ann", action="store_true", help="score bundles through the HNSW index (top 100) instead of exactly"
    )
    p.add_argument(
        "--base-model", default=None, help="text encoder of the zeroshot baseline (default: packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--device", default="cpu", help="torch device for baselines that train or encode (default: cpu)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method setting, e.g. sasrec.max_epochs=20 (repeatable)")
    p.add_argument(
        "--reference",
        default=None,
        help="method the others are compared to by paired bootstrap (default: sasrec if run, else the first)",
    )
    p.add_argument("--json", required=True, help="write the report here")
    p.add_argument("--plot", default=None, help="also draw the methods side by side into this PNG")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of every method: torch's for the baselines, ONNX Runtime's and the "
                        "index's for bundles (default: their choice, every core)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _overrides(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        key, eq, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not eq or not dot or method not in out:
            raise LmrecError(f"--set {item!r}: expected METHOD.KEY=VALUE with METHOD one of {', '.join(methods)}")
        out[method][name] = _value(value)
    return out


def make_scorers(methods: list[str], args: argparse.Namespace) -> list:
    overrides = _overrides(args.set, methods)
    scorers = []
    for m in methods:
        if m in BUNDLE_METHODS:
            if not args.bundle:
                raise LmrecError(f"--methods {m} needs --bundle DIR")
            from ..evaluation import BundleScorer

            bundle_dir(args.bundle)
            scorers.append(BundleScorer(args.bundle, BUNDLE_METHODS[m], name=m, ann=args.ann,
                                        new_items=m != "lmrec-plain", threads=args.threads))
        elif m in BASELINES:
            require("scipy" if m == "itemknn" else "numpy", "train", f"the {m} baseline")
            if m in ("zeroshot", "sasrec"):
                require("torch", "train", f"the {m} baseline")
            from lmrec.trainer.baselines import make_baseline

            options = dict(overrides[m])
            if m == "zeroshot" and args.base_model:
                options.setdefault("base_model", args.base_model)
            try:
                scorers.append(make_baseline(m, **options))
            except TypeError as e:
                raise LmrecError(f"--set {m}.…: {e}") from None
        else:
            raise LmrecError(f"--methods: unknown method {m!r} (known: {', '.join((*BASELINES, *BUNDLE_METHODS))})")
    return scorers


def run(args: argparse.Namespace) -> int:
    from ..evaluation import (
        BundleScorer,
        FitContext,
        build_report,
        check_bundle_matches,
        format_table,
        make_split,
        plot,
        run_methods,
        write_json,
    )

    # Every input is checked before any method trains: a wrong bundle is found in a second, not
    # after SASRec has trained for minutes.
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise LmrecError("--methods: name at least one method")
    if len(set(methods)) != len(methods):
        raise LmrecError("--methods: a method is named twice")
    if args.reference is not None and args.reference not in methods:
        raise LmrecError(f"--reference {args.reference!r}: not one of --methods ({', '.join(methods)})")
    if args.device not in ("cpu", "cuda", "auto"):
        raise LmrecError(f"--device {args.device!r}: expected cpu, cuda or auto")
    if not 0.0 < args.cold_share < 1.0:
        raise LmrecError(f"--cold-share {args.cold_share}: must be between 0 and 1")
    if args.plot:
        require("matplotlib", "train", "--plot")
    scorers = make_scorers(methods, args)
    if args.threads is not None and any(m in ("zeroshot", "sasrec") for m in methods):
        from lmrec.trainer import set_torch_threads

        set_torch_threads(args.threads)
    data = load_dataset(args.data)
    for line in data.report.lines():
        print(f"data: {line}")
    split = make_split(data, args.split, args.seed, cold_share=args.cold_share)
    if len(split.test) == 0:
        raise LmrecError(f"split {args.split}: no test users in {data.name}")
    ctx = FitContext(data, split, seed=args.seed, device=args.device, progress=not args.quiet)
    for scorer in scorers:
        if isinstance(scorer, BundleScorer):
            check_bundle_matches(scorer.manifest, ctx)
    results, raw = run_methods(data, split, scorers, ctx)
    reference = args.reference or ("sasrec" if "sasrec" in methods else methods[0])
    report = build_report(data, split, results, raw, reference, args.seed)
    print(format_table(report))
    write_json(report, args.json)
    if args.plot:
        plot(report, args.plot)
    return 0
