"""Baselines evaluated by the same harness as lmrec: pop, itemknn, zeroshot, sasrec."""

from __future__ import annotations

from typing import Any

from ._simple import ItemKNN, Pop, ZeroShot
from .sasrec import SASRec, SASRecConfig

BASELINES = {"pop": Pop, "itemknn": ItemKNN, "zeroshot": ZeroShot, "sasrec": SASRec}


def make_baseline(name: str, **options: Any):
    return BASELINES[name](**options)


__all__ = ["BASELINES", "make_baseline", "Pop", "ItemKNN", "ZeroShot", "SASRec", "SASRecConfig"]
