"""Datasets: one canonical in-memory form, loaders chosen by a data spec `KIND:PATH`."""

from __future__ import annotations

from pathlib import Path

from .._errors import DataError
from ._dataset import Dataset, LoadReport
from ._loaders import LOADERS
from ._synthetic import parse_synthetic_spec, synthetic
from ._text import TextTemplate

DEFAULT_SPEC = "synthetic:"
KINDS = ("movielens", "amazon", "recbole", "jsonl", "synthetic")


def load_dataset(spec: str, template: TextTemplate | str | None = None) -> Dataset:
    """Load `KIND:PATH` (see README): movielens:DIR, amazon:DIR, recbole:DIR, jsonl:DIR,
    synthetic:items=N,users=M,seed=S[,words=W]. `template` overrides the kind's default item text."""
    kind, colon, rest = spec.partition(":")
    if not colon or kind not in KINDS:
        raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
    if isinstance(template, str):
        template = TextTemplate.parse(template)
    if kind == "synthetic":
        data = synthetic(**parse_synthetic_spec(rest))
        if template is not None:
            data = Dataset(data.name, data.item_ids, [template.render(m) for m in data.item_meta],
                           data.item_meta, data.user_ids, data.sequences, data.timestamps,
                           data.report, template.spec())
        return data
    path = Path(rest).expanduser()
    if not path.is_dir():
        raise DataError(f"data spec {spec!r}: {path} is not a directory")
    return LOADERS[kind](path, template)


__all__ = ["Dataset", "LoadReport", "TextTemplate", "DataError", "load_dataset", "synthetic", "DEFAULT_SPEC"]
