"""Score a bundle through the SDK, so the numbers are what users of the bundle get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._bundle import read_manifest
from .._errors import BundleError
from .._manifest import Manifest
from ._harness import FitContext
from ._splits import HELD_OUT

ANN_FLOOR = -1e9  # items the index did not return: finite, below every real cosine


class BundleScorer:
    """`lmrec` (bundle at its default CPU precision, int8) or `lmrec-fp32`; exact scores over the
    whole catalogue, or through the HNSW index with `ann=True` (items it misses rank last).
    `new_items=False` (`lmrec-plain`) turns the bundle's new-item rules off: items without a
    residual get their text vector and no bonus, and no item the text term (the same model
    without what it does for them). `threads`: ONNX Runtime's and the index's threads (None: every
    core)."""

    def __init__(self, bundle: str, precision: str = "auto", name: str = "lmrec", ann: bool = False,
                 device: str = "cpu", new_items: bool = True, threads: int | None = None) -> None:
        self.bundle, self.precision, self.name, self.ann, self.device = bundle, precision, name, ann, device
        self.new_items, self.threads = new_items, threads
        self.params: dict[str, Any] = {"bundle": bundle, "precision": precision, "ann": ann}
        if not new_items:
            self.params["new_items"] = False
            if ann:
                raise BundleError(f"{name}: scores exactly (drop --ann)")
        self.manifest = read_manifest(bundle)[0]  # a wrong path fails now, not after other methods trained

    def fit(self, ctx: FitContext) -> None:
        from .. import Recommender

        self.rec = Recommender.load(self.bundle, device=self.device, precision=self.precision, threads=self.threads)
        check_bundle_matches(self.rec.manifest, ctx)
        ids = self.rec.item_ids()
        pos = {item: i for i, item in enumerate(ids)}
        missing = [item for item in ctx.data.item_ids if item not in pos]
        if missing:
            raise BundleError(f"{self.bundle}: {len(missing)} catalogue items are not in the bundle "
                              f"(first {missing[0]!r}): it was built from other data")
        self.to_bundle = np.array([pos[item] for item in ctx.data.item_ids])
        self.item_ids = ctx.data.item_ids
        self.params["precision"] = self.rec.precision
        self.bonus = None
        table = self.rec.catalogue.residuals
        if not self.new_items and table is not None:
            plain = [self.rec.catalogue.get(i) for i in ids if i not in table]
            if plain:  # a vector upsert is stored as given: it borrows nothing
                texts = [item.text or item.item_id for item in plain]
                self.rec.add_items([item.item_id for item in plain], texts, vectors=self.rec.embed_texts(texts),
                                   metadata=[item.metadata for item in plain])
            self.bonus = self.rec.catalogue.bonus_of(ids)
            self.rec.users.text = None

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        hist_ids = [[self.item_ids[i] for i in h] for h in histories]
        if not self.ann:
            scores = self.rec.score_all(hist_ids) - (0.0 if self.bonus is None else self.bonus)
            return scores[:, self.to_bundle]
        out = np.full((len(histories), len(self.item_ids)), ANN_FLOOR, dtype=np.float32)
        index_of = {item: i for i, item in enumerate(self.item_ids)}
        for row, hist in enumerate(hist_ids):
            for item, score in self.rec.recommend(history=hist, k=100, exclude=(), mode="ann"):
                out[row, index_of[item]] = score
        return out


def check_bundle_matches(manifest: Manifest, ctx: FitContext) -> None:
    """Refuse a bundle trained on other data, split or seed: scoring it would leak test items."""
    training = manifest.training or {}
    if not training:
        return  # zero-shot bundle: saw no interactions
    def family(kind: Any) -> Any:  # cold and mixed hold out the same items and train alike
        return "held-out" if kind in HELD_OUT else kind

    expect = {"fingerprint": ctx.data.fingerprint(), "split": family(ctx.split.kind), "seed": ctx.split.seed}
    got = {"fingerprint": (training.get("data") or {}).get("fingerprint"), "split": family(training.get("split")),
           "seed": training.get("seed")}
    if ctx.split.kind in HELD_OUT:
        expect["cold_share"], got["cold_share"] = ctx.split.params.get("cold_share"), training.get("cold_share")
    wrong = [f"{k}: bundle {got[k]!r} vs evaluation {expect[k]!r}" for k in expect if got[k] != expect[k]]
    if wrong:
        raise BundleError("the bundle was trained on other data, split or seed; evaluating it would leak "
                          "test interactions (" + "; ".join(wrong) + ")")
