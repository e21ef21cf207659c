"""`lmrec` command line: one sub-command per module, each with `register(subparsers)`.

Commands that need an optional extra import it inside their `run` function, so `lmrec --help`
and every `--help` work on a bare SDK install. Errors the user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from .._errors import LmrecError
from ._checks import output_file

# Modules under lmrec.cli, in the order a user needs them (the order of `lmrec --help`). Each
# defines register(subparsers).
COMMANDS = ["_demo", "_train", "_eval", "_export", "_recommend", "_serve", "_embed", "_index",
            "_recommend_all", "_bundle", "_data", "_bench"]

DESCRIPTION = """\
lmrec turns item text and interaction logs into a recommender: it fine-tunes a small language
model on your logs (no labels needed), exports it to quantized ONNX with the catalogue's vectors
and an HNSW index as one bundle, and serves recommendations from it in-process or over gRPC.
A new item is recommendable as soon as its text is embedded.

Start with `lmrec demo`, then `lmrec train --data KIND:PATH --out BUNDLE`; `lmrec COMMAND --help`
says more about each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrec", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


# Report files any command may write at its end (--json, --plot): checked before the command runs.
REPORT_FILES = ("json", "plot")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in REPORT_FILES:
            output_file(getattr(args, name, None), f"--{name}")
        return int(args.run(args) or 0)
    except LmrecError as e:
        print(f"lmrec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
