"""`lmrec` command line: one sub-command per module, each with `register(subparsers)`.

Commands that need an optional extra import it inside their `run` function, so `lmrec --help`
and every `--help` work on a bare SDK install. Errors the user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._errors import LmrecError

# Modules under lmrec.cli, in help order. Each defines register(subparsers).
COMMANDS = ["_data", "_eval", "_export", "_bundle", "_serve", "_recommend", "_bench",
            "_embed", "_recommend_all", "_index", "_train", "_demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except LmrecError as e:
        print(f"lmrec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
