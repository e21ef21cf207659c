"""Baselines: exactness of their tricks and that each learns something real on synthetic data."""

from __future__ import annotations

import time

import numpy as np
import pytest
from lmrec import load_dataset
from lmrec.evaluation import FitContext, evaluate, make_split

torch = pytest.importorskip("torch")
from lmrec.trainer.baselines import ItemKNN, Pop, SASRec  # noqa: E402
from lmrec.trainer.baselines.sasrec import SASRecConfig, build_model, left_pad, trim, windows  # noqa: E402

DATA = "synthetic:items=300,users=400,seed=2"


def fitted(scorer, split_kind="warm"):
    data = load_dataset(DATA)
    split = make_split(data, split_kind, seed=0)
    scorer.fit(FitContext(data, split, progress=False))
    return float(evaluate(scorer.score, split.test, split.n_items).values["ndcg@10"].mean())


def test_sasrec_trimmed_padding_is_exact():
    torch.manual_seed(0)
    cfg = SASRecConfig(dim=16, layers=2, heads=2, max_len=12)
    model = build_model(50, cfg).eval()
    seqs = [np.array([3, 4, 5]), np.array([7, 8, 9, 10, 11])]
    full = left_pad(seqs, cfg.max_len)
    with torch.inference_mode():
        a = model(torch.from_numpy(full))[:, -1]
        b = model(torch.from_numpy(trim(full)))[:, -1]
    assert trim(full).shape[1] == 5
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.isfinite(a).all()


def test_windows_cover_every_next_item_once():
    seq = np.arange(1, 24)
    ws = windows([seq], max_len=10)
    labels = np.concatenate([w[1:] for w in ws])
    assert sorted(labels.tolist()) == list(range(2, 24))


def test_overlapping_windows_cover_every_label_and_repeat_within_the_share():
    seq = np.arange(1, 120)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ws = windows([seq], max_len=10, overlap=0.5, rng=rng)
        assert ws[0].tolist() == list(range(109, 120))  # the most recent window as without overlap
        labels = np.concatenate([w[1:] for w in ws])
        assert sorted(set(labels.tolist())) == list(range(2, 120))  # every next item, none beyond
        repeats = [int(a[1]) - int(b[-1]) - 1 for a, b in zip(ws[:-1], ws[1:], strict=True)]
        assert all(-5 <= r <= 0 for r in repeats) and min(repeats) < 0  # up to half a window again
    assert [w.tolist() for w in windows([seq], 10, 0.5)] == [w.tolist() for w in windows([seq], 10)]  # no rng


def test_sasrec_window_overlap_changes_nothing_for_short_histories():
    assert SASRecConfig().window_overlap == 0.5
    short = SASRecConfig(dim=16, max_len=200, max_epochs=2, patience=2)  # every synthetic history fits one window
    assert fitted(SASRec(short, search=False)) == fitted(SASRec(short, search=False, window_overlap=0.0))
    longer = SASRecConfig(dim=16, max_len=5, max_epochs=2, patience=2)
    assert fitted(SASRec(longer, search=False)) != fitted(SASRec(longer, search=False, window_overlap=0.0))


def test_itemknn_and_sasrec_beat_popularity():
    pop = fitted(Pop())
    knn = fitted(ItemKNN())
    sas = fitted(SASRec(dim=32, max_epochs=15, patience=3, search=False))
    assert knn > 1.5 * pop
    assert sas > 1.5 * pop


def test_sasrec_is_deterministic_for_a_seed():
    a = fitted(SASRec(dim=16, max_epochs=2, patience=2))
    b = fitted(SASRec(dim=16, max_epochs=2, patience=2))
    assert a == b


def test_successive_halving_keeps_the_best_and_trains_no_epoch_twice():
    from lmrec.trainer.search import successive_halving

    class Fake:
        def __init__(self, rate: float, stop: int) -> None:
            self.rate, self.stop, self.epochs, self.best, self.finished = rate, stop, 0, -1.0, False

        def advance(self, epochs: int) -> None:
            for _ in range(epochs):
                self.epochs += 1
                self.best = max(self.best, self.rate * min(self.epochs, self.stop))
                self.finished = self.epochs >= self.stop + 3

    runs = [Fake(r, 10) for r in (0.1, 0.4, 0.2, 0.3)]
    winner, record = successive_halving(runs, (2, 6))
    assert winner is runs[1] and winner.finished and winner.epochs == 13
    assert [r["candidates"] for r in record] == [4, 2]
    assert sorted(r.epochs for r in runs) == [2, 2, 6, 13]  # the losers stopped where they were cut

    # a budget spent before the search (a large catalogue's passes): the first rung still trains
    late = [Fake(r, 10) for r in (0.1, 0.4, 0.2, 0.3)]
    winner, record = successive_halving(late, (2, 6), deadline=time.monotonic() - 1)
    assert winner is late[1] and [r.epochs for r in late] == [2, 2, 2, 2] and len(record) == 1
    alone = Fake(0.1, 10)  # one candidate, no rungs: its first epoch still trains, then the deadline stops it
    winner, record = successive_halving([alone], (), deadline=time.monotonic() - 1)
    assert winner is alone and alone.epochs == 1 and record == []


def test_coordinate_search_tries_one_setting_at_a_time_and_trains_each_setting_once():
    from dataclasses import dataclass

    from lmrec.trainer.search import coordinate_search

    @dataclass
    class Settings:
        a: int = 0
        b: int = 0

    class Fake:
        def __init__(self, settings: Settings) -> None:
            self.settings, self.epochs, self.best, self.finished = settings, 0, -1.0, False

        def advance(self, epochs: int) -> None:
            self.epochs += epochs
            self.best = {0: 0.1, 1: 0.3, 2: 0.2}[self.settings.a] + 0.01 * self.settings.b
            self.finished = self.epochs >= 3

    started: list[Settings] = []

    def start(settings: Settings) -> Fake:
        started.append(settings)
        return Fake(settings)

    best, runs, record = coordinate_search(Settings(), {"a": (0, 1, 2), "b": (0, 5)}, start)
    assert best.settings == Settings(1, 5) and best.finished
    assert started == [Settings(0, 0), Settings(1, 0), Settings(2, 0), Settings(1, 5)]  # (1, 0) not twice
    assert len(runs) == 4 and all(r.finished for r in runs)
    assert [(r["setting"], r["chosen"]) for r in record] == [("a", 1), ("b", 5)]
    alone, runs, record = coordinate_search(Settings(2, 2), {}, start)  # nothing searched: base trained
    assert alone.settings == Settings(2, 2) and alone.finished and len(runs) == 1 and record == []


def test_sasrec_chooses_its_settings_on_validation():
    sas = SASRec(dim=16, max_epochs=4, patience=2, lr=2e-3)  # lr given: fixed; dropout searched
    data = load_dataset(DATA)
    split = make_split(data, "warm", seed=0)
    sas.fit(FitContext(data, split, progress=False))
    assert sas.params["searched"] == {"dropout": [0.2, 0.5], "max_len": [50, 200]}
    assert sas.params["candidates"] == 2  # short synthetic histories: a history of 200 is no candidate
    assert sas.params["lr"] == 2e-3 and sas.params["dropout"] in (0.2, 0.5)
    assert sas.params["search_epochs"] > sas.params["epochs_run"]
    assert [stage["setting"] for stage in sas.params["search_stages"]] == ["max_len", "dropout"]
