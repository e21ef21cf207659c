"""Loaders from files on disk to a `Dataset`, chosen by a data spec `KIND:PATH`.

Policy for bad input (documented in the README):
- a missing file or a row that cannot be parsed is an error naming the file and line;
- an interaction whose item is not in the catalogue is skipped and counted in `Dataset.report`;
- an item with no text keeps its id as text and is counted (it stays recommendable).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from ._dataset import Dataset, LoadReport
from ._text import AMAZON, MOVIELENS, TextTemplate


class _Builder:
    """Collects items and (user, item, time) rows, then orders each user's rows by time, stably."""

    def __init__(self, name: str, template: TextTemplate) -> None:
        self.name = name
        self.template = template
        self.report = LoadReport()
        self.items: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def item(self, item_id: str, meta: dict[str, Any], where: str) -> None:
        if item_id in self.items:
            raise DataError(f"{where}: duplicate item id {item_id!r}")
        self.items[item_id] = meta

    def interaction(self, user: str, item: str, time: float, where: str) -> None:
        if item not in self.items:
            self.report.add("interaction with unknown item skipped", where)
            return
        self.rows[user].append((time, self._index(item)))

    def _index(self, item: str) -> int:
        if not hasattr(self, "_idx"):
            self._idx = {k: i for i, k in enumerate(self.items)}
        return self._idx[item]

    def build(self, timed: bool) -> Dataset:
        ids = list(self.items)
        texts = []
        for item_id in ids:
            text = self.template.render(self.items[item_id])
            if not text:
                self.report.add("empty item text replaced by the item id", f"item {item_id!r}")
                text = item_id
            texts.append(text)
        users, seqs, stamps = [], [], []
        for user, rows in self.rows.items():
            order = sorted(range(len(rows)), key=lambda k: rows[k][0])  # stable: ties keep file order
            users.append(user)
            seqs.append(np.fromiter((rows[k][1] for k in order), dtype=np.int64, count=len(rows)))
            stamps.append(np.fromiter((rows[k][0] for k in order), dtype=np.float64, count=len(rows)))
        if not ids:
            raise DataError(f"{self.name}: no items")
        return Dataset(
            name=self.name,
            item_ids=ids,
            item_texts=texts,
            item_meta=[self.items[i] for i in ids],
            user_ids=users,
            sequences=seqs,
            timestamps=stamps if timed else None,
            report=self.report,
            template=self.template.spec(),
        )


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _csv_rows(path: Path, columns: Iterable[str], delimiter: str = ",") -> Iterable[tuple[str, dict[str, str]]]:
    with _need(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in columns):
                raise DataError(f"{where}: wrong number of fields")
            yield where, row


def _key(value: Any, where: str, field: str) -> str:
    """An id as a string, the same whether a file wrote it as a number or a string (7, 7.0, "7")."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise DataError(f"{where}: {field} must be a string or an integer, got {value!r}")


def _number(value: str, where: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: {field} is not a number: {value!r}") from None


def _split_lines(path: Path, sep: str, n: int, encoding: str) -> Iterable[tuple[str, list[str]]]:
    with _need(path).open(encoding=encoding) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line:
                continue
            parts = line.split(sep)
            if len(parts) < n:
                raise DataError(f"{path}:{lineno}: expected {n} fields separated by {sep!r}, got {len(parts)}")
            yield f"{path}:{lineno}", parts


_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                  "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                  "Romance", "Sci-Fi", "Thriller", "War", "Western")


def load_movielens(path: Path, template: TextTemplate | None = None) -> Dataset:
    """MovieLens in any of three layouts: latest-small CSV, classic 100K (u.data/u.item), 1M (.dat)."""
    b = _Builder(path.name, template or MOVIELENS)
    if (path / "ratings.csv").exists():
        tags: dict[str, list[str]] = defaultdict(list)
        if (path / "tags.csv").exists():
            for _, row in _csv_rows(path / "tags.csv", ("movieId", "tag")):
                if row["tag"].strip() and row["tag"] not in tags[row["movieId"]]:
                    tags[row["movieId"]].append(row["tag"].strip())
        for where, row in _csv_rows(path / "movies.csv", ("movieId", "title", "genres")):
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            b.item(
                row["movieId"], {"title": row["title"], "genres": genres, "tags": tags.get(row["movieId"], [])}, where
            )
        for where, row in _csv_rows(path / "ratings.csv", ("userId", "movieId", "timestamp")):
            b.interaction(row["userId"], row["movieId"], _number(row["timestamp"], where, "timestamp"), where)
    elif (path / "u.data").exists():
        for where, parts in _split_lines(path / "u.item", "|", 5 + len(_ML100K_GENRES), "latin-1"):
            flags = parts[5:5 + len(_ML100K_GENRES)]
            genres = [g for g, on in zip(_ML100K_GENRES, flags, strict=True) if on == "1" and g != "unknown"]
            b.item(parts[0], {"title": parts[1], "genres": genres}, where)
        for where, parts in _split_lines(path / "u.data", "\t", 4, "latin-1"):
            b.interaction(parts[0], parts[1], _number(parts[3], where, "timestamp"), where)
    elif (path / "ratings.dat").exists():
        for where, parts in _split_lines(path / "movies.dat", "::", 3, "latin-1"):
            b.item(parts[0], {"title": parts[1], "genres": [g for g in parts[2].split("|") if g]}, where)
        for where, parts in _split_lines(path / "ratings.dat", "::", 4, "latin-1"):
            b.interaction(parts[0], parts[1], _number(parts[3], where, "timestamp"), where)
    else:
        raise DataError(f"{path}: no MovieLens files (ratings.csv, u.data or ratings.dat)")
    return b.build(timed=True)


def _read_json(path: Path) -> Any:
    try:
        with _need(path).open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def _one(path: Path, pattern: str) -> Path:
    found = sorted(path.glob(pattern))
    if len(found) != 1:
        raise DataError(f"{path}: expected exactly one {pattern} file, found {len(found)}")
    return found[0]


def load_amazon(path: Path, template: TextTemplate | None = None) -> Dataset:
    """`<name>.item.json` ({item: {title, description, brand, categories}}) and
    `<name>.inter.json` ({user: [item, ...]} in chronological order)."""
    item_file, inter_file = _one(path, "*.item.json"), _one(path, "*.inter.json")
    b = _Builder(path.name, template or AMAZON)
    items = _read_json(item_file)
    if not isinstance(items, dict):
        raise DataError(f"{item_file}:1: expected an object of item id -> fields")
    for item, meta in items.items():
        if not isinstance(meta, dict):
            raise DataError(f"{item_file}: item {item!r}: expected an object of fields")
        b.item(str(item), meta, f"{item_file}: item {item!r}")
    inters = _read_json(inter_file)
    if not isinstance(inters, dict):
        raise DataError(f"{inter_file}:1: expected an object of user id -> item list")
    for user, seq in inters.items():
        if not isinstance(seq, list):
            raise DataError(f"{inter_file}: user {user!r}: expected a list of items")
        for pos, item in enumerate(seq):
            b.interaction(str(user), str(item), float(pos), f"{inter_file}: user {user!r} position {pos}")
    return b.build(timed=False)


def _recbole_header(path: Path, line: str) -> list[tuple[str, str]]:
    cols = []
    for col in line.rstrip("\n").split("\t"):
        name, colon, kind = col.partition(":")
        if not colon:
            raise DataError(f"{path}:1: header column {col!r} is not name:type")
        cols.append((name, kind))
    return cols


def _recbole_rows(path: Path) -> tuple[list[tuple[str, str]], Iterable[tuple[str, list[str]]]]:
    f = _need(path).open(encoding="utf-8")
    header = _recbole_header(path, f.readline())

    def rows() -> Iterable[tuple[str, list[str]]]:
        with f:
            for lineno, line in enumerate(f, 2):
                line = line.rstrip("\n\r")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) != len(header):
                    raise DataError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, got {len(parts)}")
                yield f"{path}:{lineno}", parts

    return header, rows()


def load_recbole(path: Path, template: TextTemplate | None = None) -> Dataset:
    """RecBole atomic files: `<name>.inter` (user_id, item_id, optional timestamp) and `<name>.item`.

    Default text: the text-like (`token`, `token_seq`) columns of `.item` other than the id, in file order.
    """
    inter_file, item_file = _one(path, "*.inter"), _one(path, "*.item")
    header, rows = _recbole_rows(item_file)
    names = [n for n, _ in header]
    if "item_id" not in names:
        raise DataError(f"{item_file}:1: no item_id column")
    id_col = names.index("item_id")
    text_fields = tuple(n for n, k in header if k in ("token", "token_seq") and n != "item_id")
    b = _Builder(path.name, template or TextTemplate(text_fields or ("item_id",), sep=". "))
    numeric = {n for n, k in header if k == "float"}  # typed fields stay numbers in metadata (filters)
    for where, parts in rows:
        meta = {n: (_number(v, where, n) if n in numeric and v else v) for n, v in zip(names, parts, strict=True)}
        b.item(parts[id_col], meta, where)
    header, rows = _recbole_rows(inter_file)
    names = [n for n, _ in header]
    for need in ("user_id", "item_id"):
        if need not in names:
            raise DataError(f"{inter_file}:1: no {need} column")
    u, i = names.index("user_id"), names.index("item_id")
    t = names.index("timestamp") if "timestamp" in names else None
    for n, (where, parts) in enumerate(rows):
        time = _number(parts[t], where, "timestamp") if t is not None else float(n)
        b.interaction(parts[u], parts[i], time, where)
    return b.build(timed=t is not None)


def _jsonl(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with _need(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object")
            yield where, row


def load_jsonl(path: Path, template: TextTemplate | None = None) -> Dataset:
    """The generic schema for users' own data (see README):

    - `items.jsonl`: one object per item, `{"id": str, "text": str}` or `{"id": str, <fields>...}`
      rendered with `template` (default: the `text` field);
    - `interactions.jsonl`: `{"user": str, "item": str, "timestamp": number (optional)}`;
      without timestamps, file order is time order.

    Ids may be strings or integers, in either file. Without a template and a `text` field, the
    item text is the text-like fields (strings, lists of strings) in the order they first appear.
    """
    rows = []
    for where, row in _jsonl(path / "items.jsonl"):
        if "id" not in row:
            raise DataError(f"{where}: item has no 'id'")
        rows.append((where, _key(row["id"], where, "id"), {k: v for k, v in row.items() if k != "id"}))
    b = _Builder(path.name, template or _text_fields([meta for _, _, meta in rows]))
    for where, item, meta in rows:
        b.item(item, meta, where)
    timed = True
    for n, (where, row) in enumerate(_jsonl(path / "interactions.jsonl")):
        for need in ("user", "item"):
            if need not in row:
                raise DataError(f"{where}: interaction has no {need!r}")
        ts = row.get("timestamp")
        if ts is None:
            timed = False
        elif not isinstance(ts, (int, float)) or isinstance(ts, bool):
            raise DataError(f"{where}: timestamp is not a number: {ts!r}")
        b.interaction(_key(row["user"], where, "user"), _key(row["item"], where, "item"),
                      float(ts) if ts is not None else float(n), where)
    return b.build(timed=timed)


def _text_fields(metas: list[dict[str, Any]]) -> TextTemplate:
    """`text` when items have it, else every text-like field in first-seen order (titles only, or
    title + description + …): what a user bringing their own catalogue means by its text."""
    if any("text" in m for m in metas):
        return TextTemplate(("text",), sep=". ")
    fields: dict[str, None] = {}
    for meta in metas:
        for key, value in meta.items():
            if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                fields.setdefault(key)
    return TextTemplate(tuple(fields) or ("text",), sep=". ")


LOADERS: dict[str, Callable[..., Dataset]] = {
    "movielens": load_movielens,
    "amazon": load_amazon,
    "recbole": load_recbole,
    "jsonl": load_jsonl,
}
