"""Argument types shared by the sub-commands."""

from __future__ import annotations

import argparse


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value}: must be {what}")
    return value


def add_parity_flags(parser: argparse.ArgumentParser) -> None:
    """--strict-parity and --force: what an export does when an encoder graph misses its parity gate."""
    parser.add_argument("--strict-parity", action="store_true",
                        help="fail when a quantised encoder (int8, fp16) misses its parity gate (by default the "
                             "bundle is written, records the breach, and precision=auto never picks that graph)")
    parser.add_argument("--force", action="store_true",
                        help="write the bundle even if the fp32 graph itself fails parity (the breach is recorded)")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1, or a usage error that names the value."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0, or a usage error that names the value."""
    return _int_at_least(text, 0, "0 or more")
