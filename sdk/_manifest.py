"""`Manifest`: the typed `manifest.json` of a bundle, and the names of the files a bundle holds.

Every writer builds a `Manifest` and every reader gets one from `Manifest.from_json`, so a key is
spelt in one place. This lmrec writes format 2, 3 for a bundle whose user model ranks with a
text term (`UserModelInfo.text_weight`), or 4 when that term also has a centred part on new items
(`UserModelInfo.centred_text_weight`): a reader that does not know the key would rank without it,
so such a bundle refuses to load there instead. Format 1 bundles (lmrec 0.1) still load:
their parity record is read into the per-precision form and keys nothing reads any more
(`pooling`, `normalize`) are dropped. Keys this version does not know are kept in `extra` and
written back unchanged, so a derived bundle never loses what a newer writer recorded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._errors import BundleError

FORMAT_VERSION = 4  # the newest format this lmrec writes (`Manifest.format_needed`)
READABLE_FORMATS = (1, 2, 3, 4)
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle: its sha256 and size, checked on every load."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class DataInfo:
    """The data a bundle's catalogue came from (`fingerprint` ties a trained bundle to it)."""

    spec: str | None = None
    name: str | None = None
    fingerprint: str | None = None
    items: int | None = None
    users: int | None = None
    interactions: int | None = None
    truncated_texts: int | None = None


@dataclass(frozen=True)
class UserModelInfo:
    """`user_encoder.onnx`: (history (b, max_history, dim), mask (b, max_history)) -> (b, dim).

    The user vector the SDK ranks with turns `recent_weight` of its direction towards the mean of
    the last `recent_items` item vectors, its length kept: (1 - w) u + w |u| m̂. The user model
    ranks by what a history says overall, the last items by what the user is on now; w is chosen
    on validation (0: the user model alone).

    With `text_weight` β > 0, an item's score also adds β |u| cos(r, t): t its text vector (the
    encoder's output, before training's residual), r the mean text vector of the history's last
    `text_items` items. The fine-tuned encoder's own similarity reaches items the user model ranks
    from borrowed residuals alone (new items); β is chosen on validation after training
    (bench/RESULTS.md, "The encoder's similarity in the served score").

    With `centred_text_weight` C > 0, an item without a residual (new since training) also adds
    C |u| (cos(r, t) − r·t̄), t̄ the mean text vector of the trained items (the residual table's):
    a new item placed against the trained ones by how much closer to r it is than they are on
    average, so that a user whose last item resembles every item lifts no new one by that alone
    (bench/RESULTS.md, "A centred text term on new items"). Chosen with β after training."""

    max_history: int = 50
    hidden: int | None = None
    layers: int | None = None
    heads: int | None = None
    recent_items: int = 3
    recent_weight: float = 0.0
    text_weight: float = 0.0
    text_items: int = 1
    centred_text_weight: float = 0.0

    def check(self) -> None:
        if not _positive_int(self.max_history):
            raise TypeError(f"user_model.max_history must be a positive integer, got {self.max_history!r}")
        if not _positive_int(self.recent_items) or self.recent_items > self.max_history:
            raise TypeError(f"user_model.recent_items must be a positive integer up to max_history "
                            f"{self.max_history}, got {self.recent_items!r}")
        w = self.recent_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1:
            raise TypeError(f"user_model.recent_weight must be a number in [0, 1), got {w!r}")
        for name in ("text_weight", "centred_text_weight"):
            b = getattr(self, name)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 10:
                raise TypeError(f"user_model.{name} must be a number from 0 to 10, got {b!r}")
        if not _positive_int(self.text_items) or self.text_items > self.max_history:
            raise TypeError(f"user_model.text_items must be a positive integer up to max_history "
                            f"{self.max_history}, got {self.text_items!r}")


@dataclass(frozen=True)
class NewItemsInfo:
    """Items without a residual (new since training): the k trained text neighbours they borrow
    residuals from (weights softmax(cos / temperature) x shrink), and the bonus added to their
    scores under the user model (lmrec._residuals)."""

    k: int = 10
    temperature: float = 0.05
    shrink: float = 1.0
    bonus: float = 0.0

    def check(self) -> None:
        if not _positive_int(self.k):
            raise TypeError(f"new_items.k must be a positive integer, got {self.k!r}")
        for name in ("temperature", "shrink", "bonus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise TypeError(f"new_items.{name} must be a number, got {value!r}")
        if self.temperature <= 0:
            raise TypeError(f"new_items.temperature must be > 0, got {self.temperature!r}")


@dataclass(frozen=True)
class PrecisionGate:
    """How one encoder precision compares with the PyTorch model it was exported from."""

    passed: bool
    figures: dict[str, float] = field(default_factory=dict)  # e.g. min_cosine, top10_overlap
    limits: dict[str, float] = field(default_factory=dict)  # the gate each figure was held to
    variant: str | None = None  # how the graph was made, e.g. "dynamic int8, 6 MatMuls kept fp32"

    def breaches(self) -> list[str]:
        """Each figure below its limit, as `name value < limit`."""
        return [f"{k} {self.figures[k]:.4f} < {v:g}" for k, v in self.limits.items()
                if k in self.figures and self.figures[k] < v]

    def summary(self) -> str:
        """One line: passed or failed, with the figures held to a limit."""
        if not self.passed:
            return "failed its parity gate at export (" + "; ".join(self.breaches()) + ")"
        shown = ", ".join(f"{k} {self.figures[k]:.4f}" for k in self.limits if k in self.figures)
        return f"passed its parity gate ({shown})" if shown else "passed its parity gate"


@dataclass(frozen=True)
class Manifest:
    """What a bundle is: model, dimensions, catalogue provenance, training, parity, and its files."""

    # The files of a bundle (relative POSIX paths); only this class spells them.
    MANIFEST: ClassVar[str] = "manifest.json"
    ITEMS: ClassVar[str] = "items.jsonl"
    VECTORS: ClassVar[str] = "item_vectors.npy"
    POPULARITY: ClassVar[str] = "popularity.npy"
    TOKENIZER: ClassVar[str] = "tokenizer.json"
    USER_ENCODER: ClassVar[str] = "user_encoder.onnx"
    PROJECTION: ClassVar[str] = "projection.npy"
    RESIDUALS: ClassVar[str] = "residuals.npz"
    INDEX: ClassVar[str] = "index"
    ENCODER_FILES: ClassVar[dict[str, str]] = {
        "fp32": "item_encoder.onnx",
        "int8": "item_encoder.int8.onnx",
        "fp16": "item_encoder.fp16.onnx",
    }

    dim: int
    max_length: int
    kind: str = "zero-shot"  # or "trained"
    base_model: str | None = None
    encoder_dim: int | None = None
    template: str | None = None  # lmrec.data.TextTemplate spec of the item text
    recent: int = 1  # without a user model: a user is the mean of their last `recent` item vectors
    index: dict[str, Any] = field(default_factory=dict)  # VectorIndex params
    projection: dict[str, Any] | None = None
    data: DataInfo = field(default_factory=DataInfo)
    gates: dict[str, PrecisionGate] = field(default_factory=dict)  # precision -> its parity gate
    parity_texts: int | None = None
    onnx: dict[str, Any] | None = None
    user_model: UserModelInfo | None = None
    new_items: NewItemsInfo | None = None  # with RESIDUALS: how items without a residual are scored
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    derived_from: str | None = None  # manifest sha256 of the bundle this one was made from
    index_build: dict[str, Any] | None = None
    packed: dict[str, Any] | None = None
    lmrec_version: str | None = None
    created_at: str | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept as they were

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, raw: Any, where: str) -> Manifest:
        """Parse a decoded manifest; BundleError naming `where` and the field when it is not one."""
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: {cls.MANIFEST} is not a JSON object")
        version = raw.get("format_version")
        if version not in READABLE_FORMATS:
            raise BundleError(f"{where}: {cls.MANIFEST} format_version {version!r} is not supported "
                              f"(this lmrec reads {', '.join(map(str, READABLE_FORMATS))}; a newer lmrec wrote it?)")
        files = raw.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise BundleError(f"{where}: {cls.MANIFEST} has no valid 'files' table")
        for key in ("dim", "max_length"):
            if not _positive_int(raw.get(key)):
                raise BundleError(f"{where}: {cls.MANIFEST} field {key!r} must be a positive integer, "
                                  f"got {raw.get(key)!r}")
        raw = dict(raw)
        if version == 1:
            raw = _from_format_1(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        try:
            values["files"] = {str(name): FileEntry(str(e.get("sha256")), e.get("bytes")) for name, e in files.items()}
            values["data"] = DataInfo(**_known(DataInfo, raw.get("data") or {}))
            if raw.get("user_model") is not None:
                values["user_model"] = UserModelInfo(**_known(UserModelInfo, raw["user_model"]))
                values["user_model"].check()
            if raw.get("new_items") is not None:
                values["new_items"] = NewItemsInfo(**_known(NewItemsInfo, raw["new_items"]))
                values["new_items"].check()
            values["gates"] = {
                p: PrecisionGate(**_known(PrecisionGate, g)) for p, g in (raw.get("gates") or {}).items()
            }
            manifest = cls(**values, extra={k: v for k, v in raw.items() if k not in known})
        except (TypeError, AttributeError) as e:
            raise BundleError(f"{where}: {cls.MANIFEST} has a malformed field ({e})") from None
        if not _positive_int(manifest.recent):
            raise BundleError(f"{where}: {cls.MANIFEST} field 'recent' must be a positive integer, "
                              f"got {manifest.recent!r}")
        return manifest

    @classmethod
    def loads(cls, text: str | bytes, where: str) -> Manifest:
        try:
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{where}: {cls.MANIFEST} cannot be parsed ({e})") from None
        return cls.from_json(raw, where)

    # -- writing --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON object written as manifest.json (extra keys last, unchanged)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["files"] = {name: dataclasses.asdict(e) for name, e in self.files.items()}
        out["data"] = dataclasses.asdict(self.data)
        out["user_model"] = None if self.user_model is None else dataclasses.asdict(self.user_model)
        out["gates"] = {p: dataclasses.asdict(g) for p, g in self.gates.items()}
        out["new_items"] = None if self.new_items is None else dataclasses.asdict(self.new_items)
        return {**out, **self.extra}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False, default=_json_default) + "\n"

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def derived(self, source_sha256: str, items: int, index: dict[str, Any], **changes: Any) -> Manifest:
        """This manifest for a bundle made from this one with another catalogue (files unset)."""
        return self.replace(data=dataclasses.replace(self.data, items=items), index=dict(index),
                            derived_from=source_sha256, files={}, **changes)

    # -- questions ------------------------------------------------------------------------------
    def encoder_sha256(self) -> set[str]:
        """Checksums of the item encoder graphs: two bundles share an encoder when these meet."""
        return {self.files[f].sha256 for f in self.ENCODER_FILES.values() if f in self.files}

    def format_needed(self) -> int:
        """The format a writer records: 4 when ranking needs the text term's centred part, 3 when
        it needs the text term, else 2."""
        return 4 if self.centred_text_weight else 3 if self.text_weight else 2

    @property
    def text_weight(self) -> float:
        """β of the user model's text term (0.0: none, or no user model)."""
        return 0.0 if self.user_model is None else float(self.user_model.text_weight)

    @property
    def centred_text_weight(self) -> float:
        """C of the text term's centred part on new items (0.0: none, or no user model)."""
        return 0.0 if self.user_model is None else float(self.user_model.centred_text_weight)

    @property
    def ranks_with_text(self) -> bool:
        """Whether ranking reads the items' text vectors (either part of the text term)."""
        return bool(self.text_weight or self.centred_text_weight)

    def gate_passed(self, precision: str) -> bool | None:
        """Whether `precision` passed its parity gate at export (None: not measured)."""
        gate = self.gates.get(precision)
        return None if gate is None else gate.passed


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _known(cls: type, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


# format 1's flat parity keys: precision -> {figure name in format 2: key in format 1}
_V1_FIGURES = {
    "fp32": {"min_cosine": "fp32_min_cosine", "mean_cosine": "fp32_mean_cosine"},
    "int8": {"min_cosine": "int8_min_cosine", "mean_cosine": "int8_mean_cosine",
             "top10_overlap": "int8_top10_overlap"},
    "fp16": {"min_cosine": "fp16_min_cosine", "mean_cosine": "fp16_mean_cosine"},
}


def _from_format_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 → 2: `recommend.recent` → `recent`, the flat parity record → `gates`."""
    raw.pop("pooling", None)
    raw.pop("normalize", None)
    recommend = raw.pop("recommend", None)
    if isinstance(recommend, dict) and "recent" in recommend:
        raw["recent"] = recommend["recent"]
    parity = raw.pop("parity", None)
    if isinstance(parity, dict):
        limits = parity.get("gate") or {}
        gates = {}
        for precision, names in _V1_FIGURES.items():
            figures = {new: parity[old] for new, old in names.items() if isinstance(parity.get(old), (int, float))}
            if figures:
                held = {new: limits[old] for new, old in names.items() if old in limits}
                passed = all(figures.get(k, float("inf")) >= v for k, v in held.items())
                gates[precision] = {"passed": passed, "figures": figures, "limits": held}
        raw["gates"] = gates
        raw["parity_texts"] = parity.get("texts")
    return raw


def _json_default(value: Any) -> Any:
    import os
    from pathlib import Path

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    raise TypeError(f"manifest value of type {type(value).__name__} is not JSON serialisable")


__all__ = ["Manifest", "FileEntry", "DataInfo", "UserModelInfo", "NewItemsInfo", "PrecisionGate", "FORMAT_VERSION",
           "PRECISIONS"]
