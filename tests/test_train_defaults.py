"""What `lmrec train` does with no config: the encoder's own fine-tuning stage, the search over a
few settings, and on a split with new items the borrowed residuals and the new-item bonus."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("onnx", reason="export needs the train extra (onnx)")

import lmrec  # noqa: E402
import lmrec.trainer as _train  # noqa: E402
from conftest import TINY_DATA  # noqa: E402
from lmrec import LmrecError  # noqa: E402
from lmrec.cli import main  # noqa: E402
from lmrec.evaluation import BundleScorer, FitContext, evaluate, make_split, training_items  # noqa: E402
from lmrec.trainer import TrainConfig, load_config, train  # noqa: E402

FAST = {"epochs": 3, "patience": 3, "max_length": 64, "hidden": 16, "max_history": 12, "batch_size": 32,
        "text_epochs": 4, "text_batch": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tiny_bert_dir: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**FAST, "base_model": str(tiny_bert_dir), **changes})


@pytest.mark.parametrize("gains", [True, False])
def test_the_text_stage_keeps_the_encoder_only_when_validation_improves(tiny_bert_dir: Path, gains: bool) -> None:
    from lmrec.trainer import TorchEncoder, finetune_text

    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    encoder = TorchEncoder(str(tiny_bert_dir), max_length=64)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    calls = iter(range(100))  # 0 for the base encoder, then rising: each validation beats the last
    result = finetune_text(encoder, data.item_texts, split.train, training_items(split), _config(tiny_bert_dir),
                           (lambda v: float(next(calls))) if gains else (lambda v: 0.0), seed=0, progress=False,
                           log=lambda m: None)
    after = encoder.model.state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert result.report["fine_tuned"] is gains and changed is gains and (result.state is not None) is gains
    assert result.report["steps"] > 0 and result.report["seconds_per_step"] > 0
    if gains:  # the encoder ends with the weights of its best epoch, and the vectors are that encoder's
        assert result.report["best_epoch"] == result.report["epochs"]
        fresh = encoder.encode(data.item_texts[:8])
        assert np.allclose(fresh, result.vectors[:8], atol=2e-2)  # cached fp16 states vs a full pass


def test_text_max_length_cuts_what_the_stage_trains_and_validates_on(tiny_bert_dir: Path) -> None:
    """By default and at max_length the stage's vectors are the served encoder's on whole texts;
    shorter, they are those of a cut the export never makes (bench/RESULTS.md, "Whole texts by default")."""
    from lmrec.trainer import TorchEncoder, finetune_text

    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    texts = [" ".join([t] * 16) for t in data.item_texts]  # longer than max_length (128 tokens)
    encoder = TorchEncoder(str(tiny_bert_dir), max_length=128)
    whole = encoder.encode(texts)

    def stage(**length: int | None) -> np.ndarray:
        cfg = _config(tiny_bert_dir, text_epochs=2, text_temperature=0.1, **length)
        result = finetune_text(encoder, texts, split.train, training_items(split), cfg, lambda v: 0.0, seed=0,
                               progress=False, log=lambda m: None)
        assert result.state is None  # the base encoder kept: its vectors as the stage saw them
        return result.vectors

    assert np.allclose(stage(), whole, atol=2e-2)  # the default: the texts as served
    assert np.allclose(stage(text_max_length=None), whole, atol=2e-2)
    assert np.allclose(stage(text_max_length=128), whole, atol=2e-2)
    assert np.allclose(stage(text_max_length=512), whole, atol=2e-2)  # never beyond what the encoder serves
    assert not np.allclose(stage(text_max_length=64), whole, atol=2e-2)


def test_text_max_length_names_its_limit_and_null_sets_it_to_the_served_length(tmp_path: Path) -> None:
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"text_max_length": 32, "text_temperature": 0.1}))
    cfg = load_config(record, text_max_length=None, text_temperature=None)  # `--set KEY=null`
    assert cfg.text_max_length is None and cfg.text_temperature is None
    assert load_config(record).text_max_length == 32
    with pytest.raises(LmrecError, match=r"config text_max_length=4: must be an integer from 8 to 512, or null"):
        load_config(None, text_max_length=4)


@pytest.mark.parametrize("winner", [0, 1])
def test_the_stage_chooses_its_temperature_and_the_winner_ends_as_it_would_alone(tiny_bert_dir: Path,
                                                                                  winner: int) -> None:
    """Both temperatures run their first epochs on the same layers in turn; the one with the best
    validation goes on and ends with the weights it would have had alone, bit for bit."""
    from lmrec.trainer import TEXT_TEMPERATURES, TorchEncoder, finetune_text

    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    cfg = _config(tiny_bert_dir, text_epochs=8)
    assert cfg.text_temperature is None
    # validations: the base, 2 per temperature (epochs 2 and 4), then the winner's epochs 6 and 8
    scores = [0.0, 5, 6, 1, 2, 7, 8] if winner == 0 else [0.0, 1, 2, 5, 6, 7, 8]

    def run(config: TrainConfig, values: list[float]) -> tuple[dict, dict, list]:
        encoder = TorchEncoder(str(tiny_bert_dir), max_length=64)
        calls = iter(values)
        result = finetune_text(encoder, data.item_texts, split.train, training_items(split), config,
                               lambda v: float(next(calls)), seed=0, progress=False, log=lambda m: None)
        return result.report, encoder.model.state_dict(), result.vectors

    chosen, chosen_state, chosen_vectors = run(cfg, scores)
    tau = TEXT_TEMPERATURES[winner]
    assert chosen["temperature"] == tau and chosen["best_epoch"] == 8 and chosen["epochs"] == 8
    assert {k: v["epochs"] for k, v in chosen["temperatures"].items()} == {f"{t:g}": (8 if t == tau else 4)
                                                                           for t in TEXT_TEMPERATURES}
    alone, alone_state, alone_vectors = run(cfg.with_(text_temperature=tau), [0.0, 5, 6, 7, 8])
    assert "temperatures" not in alone and alone["temperature"] == tau
    assert [r["loss"] for r in alone["history"]] == [r["loss"] for r in chosen["history"]]
    assert all(torch.equal(alone_state[k], chosen_state[k]) for k in alone_state)
    assert np.array_equal(alone_vectors, chosen_vectors)
    with pytest.raises(LmrecError, match=r"config text_temperature=0: must be a number from 0.001 to 100, or null"):
        cfg.with_(text_temperature=0)


@pytest.mark.parametrize("winner", [0, 1])
def test_the_race_goes_to_the_temperature_ahead_when_neither_has_passed_the_base(tiny_bert_dir: Path,
                                                                               winner: int) -> None:
    """Early epochs often score below the base encoder; the race then compares the temperatures'
    own validations (it once handed the stage to the first listed, which stopped at once)."""
    from lmrec.trainer import TEXT_TEMPERATURES, TorchEncoder, finetune_text

    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "warm", 0)
    scores = [10.0, 1, 2, 3, 4, 11, 12] if winner == 1 else [10.0, 3, 4, 1, 2, 11, 12]
    calls = iter(scores)
    result = finetune_text(TorchEncoder(str(tiny_bert_dir), max_length=64), data.item_texts, split.train,
                           training_items(split), _config(tiny_bert_dir, text_epochs=8),
                           lambda v: float(next(calls)), seed=0, progress=False, log=lambda m: None)
    report = result.report
    assert report["temperature"] == TEXT_TEMPERATURES[winner] and report["fine_tuned"]
    assert report["best_epoch"] == 8 and report["valid_ndcg@10"]["fine_tuned"] == 12
    assert {k: v["valid_ndcg@10"] for k, v in report["temperatures"].items()} == {
        f"{t:g}": (12 if i == winner else 2) for i, t in enumerate(TEXT_TEMPERATURES)}


def test_cached_states_of_a_large_catalogue_go_to_a_file_and_give_the_same_vectors(
        tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmrec.trainer import PartialEncoder, TorchEncoder

    texts = lmrec.load_dataset(TINY_DATA).item_texts
    encoder = TorchEncoder(str(tiny_bert_dir), max_length=64)
    in_memory = PartialEncoder(encoder, texts, 1, batch_size=16, progress=False)
    on_disk = PartialEncoder(encoder, texts, 1, batch_size=16, progress=False, spill_dir=tmp_path / "spill",
                             memory_limit=0)
    assert not isinstance(in_memory.states, np.memmap) and in_memory.spill is None
    assert isinstance(on_disk.states, np.memmap) and on_disk.spill is not None
    assert list(os.listdir(tmp_path / "spill")) == []  # the file has no name: it goes with the process
    assert np.array_equal(in_memory.states, on_disk.states)
    assert np.array_equal(in_memory.encode_all(progress=False), on_disk.encode_all(progress=False))
    fresh = encoder.encode(texts[:8])
    assert np.allclose(fresh, on_disk.encode_all(progress=False)[:8], atol=2e-2)  # top layer over the cache
    # the cache pass runs the frozen layers only: the whole model's states to the bit (its first batch)
    first = np.argsort([-len(t) for t in texts], kind="stable")[:16]
    batch = encoder.tokenizer([texts[i] for i in first], padding=True, truncation=True, max_length=64,
                              return_tensors="pt")
    with torch.inference_mode():
        whole = encoder.model(**batch, output_hidden_states=True).hidden_states[in_memory.below].to(torch.float16)
    for row, i in enumerate(first):
        states = in_memory.states[in_memory.offsets[i]:in_memory.offsets[i + 1]]
        assert np.array_equal(states, whole[row, :len(states)].numpy())

    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with pytest.raises(LmrecError, match=r"objective text: the cached states of \d+ texts need .* GiB in .*spill"
                                         r" \(No space left on device\); free space there or lower text_max_length"):
        PartialEncoder(encoder, texts, 1, progress=False, spill_dir=tmp_path / "spill", memory_limit=0)


def test_a_search_without_config_chooses_on_validation_and_records_it(tiny_bert_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # the tiny stage ends within a hair of the base on validation, kept or not by bf16 rounding from
    # run to run (fresh clones differed): the manifest must say which, whichever it was
    result = train(TINY_DATA, tmp_path / "searched", seed=2, config=_config(tiny_bert_dir, text_lr=5e-4),
                   search=True, fixed=set(FAST) | {"base_model"}, progress=False)
    training = json.loads((result.bundle / "manifest.json").read_text())["training"]
    search = training["search"]
    assert len(search["candidates"]) == 4 and training["searched"]  # cl+cooc on/off x residual dropout
    best = max(search["candidates"], key=lambda c: c["best_valid_ndcg@10"])
    assert search["chosen"] == best["settings"]
    assert "text" in training and training["encoder_fine_tuned"] == training["text"]["fine_tuned"]
    err = capsys.readouterr().err
    assert f"({training['encoder']}) to ONNX" in err  # the log names the weights it exports
    # the warm split needs the untrained vectors only where the stage's encoder was not kept
    assert ("base vectors:" in err) != training["encoder_fine_tuned"]
    chosen = training["config"]
    assert f"residual_dropout {chosen['residual_dropout']}" in search["chosen"]
    assert chosen["max_length"] == FAST["max_length"]  # fixed settings stay as given


def test_the_search_ranks_candidates_by_their_trained_epochs_not_the_untrained_start_they_share() -> None:
    """Every candidate's overall best counts the untrained start (0.5 here); where none beats it,
    ranking by that best ties them all and kept the first listed, however little it learned."""
    from lmrec.trainer.search import TrainerRun, successive_halving

    class Stub:  # the part of a Trainer the search uses
        def __init__(self, curve: list[float]) -> None:
            self.curve, self.epoch, self.phase_best = curve, 0, -1.0
            self.best = {"valid": 0.5}  # the untrained start, shared

        @property
        def phase_done(self) -> bool:
            return self.epoch >= len(self.curve)

        def advance_user(self, epochs: int, name: str, save: object) -> None:
            for _ in range(min(epochs, len(self.curve) - self.epoch)):
                ndcg = self.curve[self.epoch]
                self.epoch += 1
                self.phase_best, self.best["valid"] = max(self.phase_best, ndcg), max(self.best["valid"], ndcg)

    stalls, learns = Stub([0.30, 0.30, 0.31, 0.31]), Stub([0.35, 0.42, 0.47, 0.52, 0.55])
    runs = [TrainerRun(t, lambda: None) for t in (stalls, learns)]  # type: ignore[arg-type]
    winner, record = successive_halving(runs, (1, 3, 6))
    assert winner is runs[1] and learns.phase_done and stalls.epoch == 1  # the staller is cut at the first rung
    assert [r.best for r in runs] == [0.30, 0.55] and record[0]["best"] == 0.35


def test_the_searchs_winner_is_the_model_its_recorded_settings_train_alone(tiny_bert_dir: Path,
                                                                          tmp_path: Path) -> None:
    # the candidates train in turns; each draws dropout from its own generator, as it would alone
    searched = train(TINY_DATA, tmp_path / "searched", seed=2, config=_config(tiny_bert_dir), search=True,
                     fixed=set(FAST) | {"base_model"}, progress=False)
    training = json.loads((searched.bundle / "manifest.json").read_text())["training"]
    record = tmp_path / "config.json"  # what `lmrec train --config` of the manifest's settings reads
    record.write_text(json.dumps(training["config"]))
    alone = train(TINY_DATA, tmp_path / "alone", seed=2, config=load_config(record), search=False, progress=False)
    assert np.array_equal(np.load(searched.bundle / "item_vectors.npy"), np.load(alone.bundle / "item_vectors.npy"))


def test_a_search_with_new_items_keeps_cl_and_cooc_off_and_races_the_popularity_prior(
        tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = train(TINY_DATA, tmp_path / "mixed", split="mixed", seed=1, config=_config(tiny_bert_dir), search=True,
                   fixed=set(FAST) | {"base_model"}, progress=False)
    training = json.loads((result.bundle / "manifest.json").read_text())["training"]
    settings = [c["settings"] for c in training["search"]["candidates"]]
    assert settings == ["popularity_prior 1.0", "popularity_prior 0.0"]
    assert training["config"]["objectives"] == ["text"] and training["config"]["residual_dropout"] > 0
    err = capsys.readouterr().err
    assert "objectives cl,cooc off beside borrowed residuals" in err
    assert err.count("base vectors:") == 1  # new targets: their floor is the untrained encoder's, one pass
    # what the text stage did to new targets, which its choice over every target can hide
    new = training["text"]["new_targets"]
    assert new["cases"] > 0 and set(new["valid_ndcg@10"]) == {"base", "fine_tuned"}
    assert f"text: new-target validation cases ({new['cases']})" in err
    if not training["text"]["fine_tuned"]:
        assert new["valid_ndcg@10"]["fine_tuned"] == new["valid_ndcg@10"]["base"]


def test_no_search_takes_the_splits_defaults_and_a_config_file_keeps_its_objectives(
        tiny_bert_dir: Path, tmp_path: Path) -> None:
    fast = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]
    common = ["train", "--data", TINY_DATA, "--split", "mixed", "--seed", "1", "--base-model", str(tiny_bert_dir),
              "--quiet", *fast]

    def objectives(out: Path) -> list[str]:
        training = json.loads((out / "manifest.json").read_text())["training"]
        assert not training["searched"]
        return list(training["config"]["objectives"])

    assert main([*common, "--no-search", "--out", str(tmp_path / "defaults")]) == 0
    assert objectives(tmp_path / "defaults") == ["text"]  # as the search's candidates have them on this split
    assert main([*common, "--no-search", "--objectives", "text,cooc", "--out", str(tmp_path / "set")]) == 0
    assert objectives(tmp_path / "set") == ["text", "cooc"]  # what the user sets stays
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"objectives": ["text", "cl", "cooc"]}))
    assert main([*common, "--config", str(config), "--out", str(tmp_path / "file")]) == 0
    assert objectives(tmp_path / "file") == ["text", "cl", "cooc"]  # a config file fixes everything


@pytest.mark.parametrize(("text_epochs", "cut"), [(1, ["search"]), (2, ["text", "search"])])
def test_a_budget_spent_before_training_still_trains_one_epoch(tiny_bert_dir: Path, tmp_path: Path, text_epochs: int,
                                                               cut: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tiny_bert_dir, text_epochs=text_epochs)
    result = train(TINY_DATA, tmp_path / "late", seed=2, config=config, search=True,
                   fixed=set(FAST) | {"base_model"}, budget=1e-6, progress=False)
    err = capsys.readouterr().err
    assert "warning: the passes over the catalogue took" in err and "raise --budget" in err
    assert "search: 1 candidate(s), about 0 epochs before the winner's own" in err
    training = json.loads((result.bundle / "manifest.json").read_text())["training"]
    search = training["search"]
    # a text stage of one epoch ended on its own (epochs, not the clock); of two, the clock cut it
    assert training["text"]["epochs"] == 1
    assert training["text"]["stopped"] == ("epochs" if text_epochs == 1 else "budget")
    # the second temperature never ran: no validation of its own, and the first goes on
    assert training["text"]["temperatures"]["0.1"] == {"epochs": 0, "valid_ndcg@10": None}
    assert training["text"]["temperature"] == 0.05 and "0.1 valid ndcg@10 not run" in err
    assert training["budget"] == {"minutes": 1e-6, "cut": [*cut, "test_like"]}  # the clock skipped it too
    assert f"cut {', '.join(cut)} short" in err and "may not reproduce" in err
    assert "warning: test-like validation skipped: its 1 epoch(s) take about" in err
    assert search["stopped_by_budget"] and "spent the --budget" in search["skipped"]
    assert len(search["candidates"]) == 1  # no search: an epoch a candidate would overrun it 4 times
    assert [h["epoch"] for h in result.history if h["phase"] == "user"] == [1]


def test_the_text_rule_spends_the_centred_parts_gain_on_warm_targets() -> None:
    def row(beta: float, centred: float, new: float, warm: float) -> dict[str, float]:
        return {"beta": beta, "centred": centred, "new": new, "warm": warm, "ndcg@10": (new + warm) / 2}

    rows = [row(0.0, 0.0, 0.010, 0.100), row(0.0, 0.02, 0.013, 0.099),
            row(0.1, 0.0, 0.020, 0.098), row(0.1, 0.02, 0.024, 0.0985),
            row(0.2, 0.0, 0.030, 0.0971), row(0.2, 0.02, 0.034, 0.0969),
            row(0.3, 0.0, 0.040, 0.090), row(0.3, 0.02, 0.045, 0.089)]
    assert _train.text_rule(rows[::2]) == 2  # C 0 alone: β 0.2, the most on new targets within 3 % of warm
    assert _train.text_rule(rows) == 4  # no C row within the floor ranks new targets as well
    rows[3]["new"] = 0.031  # β 0.1 + C 0.02 now ranks new targets better than β 0.2, and warm ones too
    assert _train.text_rule(rows) == 3
    rows[5]["warm"] = 0.099  # β 0.2 + C 0.02: within the floor and warm targets best of those eligible
    assert _train.text_rule(rows) == 5
    rows[1]["warm"] = 0.1  # warm targets best of all, but new ones below β 0.2's: never chosen
    assert _train.text_rule(rows) == 5
    # without new targets (the warm split) the most NDCG@10
    assert _train.text_rule([{**r, "new": None, "warm": None, "ndcg@10": r["new"] + r["warm"]} for r in rows]) == 7


def test_several_test_like_validations_judge_the_text_term_on_their_cases_pooled(
        tiny_bert_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_bert_dir, objectives=(), test_like_origins=2)
    lines: list[str] = []
    result = train(TINY_DATA, tmp_path / "m", split="mixed", seed=1, config=cfg, progress=False, log=lines.append)
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    text = manifest["training"]["text_term"]
    judged, origins = text["test_like"]["grid"], text["test_like"]["origins"]
    data = lmrec.load_dataset(TINY_DATA)
    shorter = [make_split(data, "mixed", 1, drop_last=k) for k in (1, 2)]  # 1 and 2 interactions shorter
    cases = [len(s.test) for s in shorter]
    new = [int(s.new_targets(s.test).sum()) for s in shorter]
    warm = [c - k for c, k in zip(cases, new, strict=True)]
    assert [o["cases"] for o in origins] == cases and text["test_like"]["cases"] == sum(cases)
    assert 0 < sum(new) < sum(cases)  # new targets and warm ones: the rule weighs both
    for n, row in enumerate(judged):  # each β's NDCG@10 over both validations' cases at once
        for key, weights in (("ndcg@10", cases), ("new", new), ("warm", warm)):
            parts = [(o["grid"][n][key], w) for o, w in zip(origins, weights, strict=True) if w]
            assert row[key] == pytest.approx(sum(v * w for v, w in parts) / sum(w for _, w in parts))
    n = _train.text_rule(judged)
    assert text["weight"] == text["grid"][n]["beta"] == manifest["user_model"]["text_weight"]
    assert text["centred_weight"] == text["grid"][n]["centred"] == manifest["user_model"]["centred_text_weight"]
    assert manifest["new_items"]["bonus"] == text["grid"][n]["bonus"]
    assert sum("on the split 2 interactions shorter" in line for line in lines) == 1
    assert any(line.startswith("the text term weighs") and "(2 of them, pooled)" in line for line in lines)
    # by default three where the split holds new items (the mixed test below), one where it has none
    warm = train(TINY_DATA, tmp_path / "w", seed=1, config=dataclasses.replace(cfg, test_like_origins=None),
                 progress=False)
    text = json.loads((warm.bundle / "manifest.json").read_text())["training"]["text_term"]
    assert text["chosen_on"] == "test-like validation" and "origins" not in text["test_like"]
    assert text["test_like"]["cases"] == len(make_split(data, "warm", 1, drop_last=1).test)
    with pytest.raises(LmrecError, match=r"config test_like_origins=0: must be an integer from 1 to 10, or null "
                                         r"\(3 where the split holds new items, else 1\)"):
        train(TINY_DATA, tmp_path / "z", config=dataclasses.replace(cfg, test_like_origins=0), progress=False)


def test_cold_and_mixed_train_alike_with_borrowed_residuals_and_a_calibrated_bonus(
        tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tiny_bert_dir, objectives=("cl",), residual_dropout=0.5)
    result = train(TINY_DATA, tmp_path / "mixed", split="mixed", seed=1, config=cfg, progress=False)
    bundle = result.bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["config"]["objectives"] == ["cl"]  # a given config keeps its objectives
    calibration = manifest["training"]["new_items"]
    assert calibration["chosen_on"] == "validation"
    grid = calibration["grid"]
    allowed = [r for r in grid if r["warm"] >= 0.97 * grid[0]["warm"]]
    reaching = [r for r in allowed if r["new"] >= calibration["floor"]]
    expected = reaching[0]["bonus"] if reaching else max(allowed, key=lambda r: r["new"])["bonus"]
    assert allowed[0] is grid[0] and calibration["reached_floor"] == bool(reaching)
    assert manifest["new_items"]["bonus"] == calibration["bonus"] == expected
    recent = manifest["training"]["recent"]  # the last items' weight in the user vector, chosen alike
    assert recent["chosen_on"] == "validation" and len(recent["grid"]) > 1
    assert recent["weight"] == max(recent["grid"], key=lambda r: r["ndcg@10"])["weight"]
    assert manifest["user_model"]["recent_weight"] == recent["weight"]
    assert manifest["user_model"]["recent_items"] == recent["items"] == 3
    # then β of the text term, each with its bonus, and C of its centred part on new items, on three
    # test-like validations by default (the same settings trained 1, 2 and 3 interactions shorter),
    # their cases pooled: new targets' best over β at C 0 with warm ones within 3 % of β 0's; then
    # the row within that floor, new targets at least as well, that keeps warm targets best
    text = manifest["training"]["text_term"]
    assert text["chosen_on"] == "test-like validation"
    betas, weights = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5), (0.0, 0.01, 0.02, 0.03, 0.05, 0.1)
    assert [(r["beta"], r["centred"]) for r in text["grid"]] == [(b, c) for b in betas for c in weights]
    cases = [len(make_split(lmrec.load_dataset(TINY_DATA), "mixed", 1, drop_last=k).test) for k in (1, 2, 3)]
    judged = text["test_like"]["grid"]
    assert [o["cases"] for o in text["test_like"]["origins"]] == cases and text["test_like"]["cases"] == sum(cases)
    # it trains as many epochs as the kept model's user phase took to its best: the seed sets its length
    user = [h for h in result.history if h["phase"] == "user"]
    peak = max(user, key=lambda h: h["valid_ndcg@10"])["epoch"]
    assert text["test_like"]["epochs"] <= peak and text["test_like"]["best_epoch"] <= peak
    assert [(r["beta"], r["centred"]) for r in judged] == [(r["beta"], r["centred"]) for r in text["grid"]]
    kept = [n for n, r in enumerate(judged) if r["warm"] >= 0.97 * judged[0]["warm"]]
    first = max((n for n in kept if judged[n]["centred"] == 0.0), key=lambda n: judged[n]["new"])
    best = max((n for n in kept if judged[n]["new"] >= judged[first]["new"]), key=lambda n: judged[n]["warm"])
    assert text["weight"] == text["grid"][best]["beta"] == manifest["user_model"]["text_weight"]
    assert text["centred_weight"] == text["grid"][best]["centred"] == manifest["user_model"]["centred_text_weight"]
    assert manifest["format_version"] == (4 if text["centred_weight"] else 3 if text["weight"] else 2)
    at_w = next(r for r in recent["grid"] if r["weight"] == recent["weight"])
    assert text["grid"][0]["bonus"] == at_w["bonus"]  # the β 0 row is the model calibrated so far
    assert manifest["new_items"]["bonus"] == text["grid"][best]["bonus"]
    assert (bundle / "residuals.npz").is_file()
    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "mixed", 1)
    rec = lmrec.Recommender.load(bundle, precision="fp32")
    trained_ids = {data.item_ids[i] for i in np.flatnonzero(training_items(split))}
    assert set(rec.catalogue.residuals.ids) == trained_ids  # type: ignore[union-attr]
    # the SDK ranks validation as training measured it, bonus and borrowed residuals included
    scorer = BundleScorer(str(bundle), "fp32")
    scorer.fit(FitContext(data, split))
    ndcg = float(evaluate(scorer.score, split.valid, split.n_items).values["ndcg@10"].mean())
    assert ndcg == pytest.approx(manifest["metrics"]["valid"]["ndcg@10"], abs=0.01)
    # and recommend serves that ranking: a trained user vector is not unit length, and the bonus
    # (the shipped one, and a large one) is weighed as the trainer weighed it
    hist = [[data.item_ids[i] for i in h] for h in split.valid.histories[:40]]
    table = rec.catalogue.residuals
    assert table is not None and np.linalg.norm(rec.embed_user(hist[0])) > 2
    for bonus in (table.info.bonus, 0.5):
        table.info = dataclasses.replace(table.info, bonus=bonus)
        scores = rec.score_all(hist)
        for mode in ("exact", "ann"):
            for row, h, got in zip(scores, hist, rec.recommend_batch(hist, k=10, mode=mode), strict=True):
                at = {i: row[n] for n, i in enumerate(rec.item_ids())}
                tenth = np.sort([v for i, v in at.items() if i not in h])[-10]
                assert len(got) == 10 and min(at[r.item_id] for r in got) >= tenth - 1e-4
    # a bundle trained for mixed is evaluated on cold, and the report splits metrics by target
    report = tmp_path / "cold.json"
    assert main(["eval", "--data", TINY_DATA, "--split", "cold", "--seed", "1", "--methods", "lmrec-fp32",
                 "--bundle", str(bundle), "--quiet", "--json", str(report)]) == 0
    mixed = tmp_path / "mixed.json"
    assert main(["eval", "--data", TINY_DATA, "--split", "mixed", "--seed", "1", "--methods",
                 "lmrec-fp32,lmrec-plain", "--bundle", str(bundle), "--quiet", "--json", str(mixed)]) == 0
    results = json.loads(mixed.read_text())["results"]
    by_target = results["lmrec-fp32"]["by_target"]
    assert by_target["new"]["users"] + by_target["warm"]["users"] == len(split.valid)
    assert results["lmrec-plain"]["by_target"]["new"]["users"] == by_target["new"]["users"]
    # lmrec-plain: the same bundle with new items as their text alone, and no bonus
    plain = BundleScorer(str(bundle), "fp32", new_items=False)
    plain.fit(FitContext(data, split))
    new_id = data.item_ids[int(split.cold_items[0])]
    text = plain.rec.embed_texts([plain.rec.catalogue.get(new_id).text])[0]
    assert np.allclose(plain.rec.catalogue.vectors([new_id])[0], text, atol=1e-6)
    history = split.valid.histories[:4]
    users = plain.rec.users.vectors([[data.item_ids[i] for i in h] for h in history])
    _, matrix = plain.rec.catalogue.matrix()
    assert np.allclose(plain.score(history), (users @ matrix.T)[:, plain.to_bundle], atol=1e-5)
    # the manifest says what the new-item settings cost and buy together on validation, against
    # the model without them as lmrec-plain serves it, and `bundle verify` prints it
    pieces = calibration["validation"]
    values = {"served": evaluate(scorer.score, split.valid, split.n_items).values["ndcg@10"],
              "without": evaluate(plain.score, split.valid, split.n_items).values["ndcg@10"]}
    new = split.new_targets(split.valid)
    assert new.any() and not new.all()
    for side, ndcg in values.items():
        assert pieces[side]["ndcg@10"] == pytest.approx(float(ndcg.mean()), abs=0.01)
        assert pieces[side]["warm"] == pytest.approx(float(ndcg[~new].mean()), abs=0.01)
        assert pieces[side]["new"] == pytest.approx(float(ndcg[new].mean()), abs=0.02)
    assert pieces["served"]["ndcg@10"] == manifest["metrics"]["valid"]["ndcg@10"]
    assert pieces["warm_share"] == pytest.approx(pieces["served"]["warm"] / pieces["without"]["warm"])
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle)]) == 0
    assert f"keep {pieces['warm_share']:.1%} of warm targets' NDCG@10" in capsys.readouterr().out


def test_the_sdk_serves_the_text_term_as_training_measured_it(tiny_bert_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_bert_dir, objectives=(), text_weight=0.5, text_items=2, centred_text_weight=0.3)
    result = train(TINY_DATA, tmp_path / "b", split="mixed", seed=1, config=cfg, progress=False)
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    text_term = manifest["training"]["text_term"]  # a fixed β and C need no test-like validation
    assert manifest["format_version"] == 4 and text_term["chosen_on"] == "config" and "test_like" not in text_term
    assert manifest["user_model"]["text_weight"] == 0.5 and manifest["user_model"]["text_items"] == 2
    assert manifest["user_model"]["centred_text_weight"] == 0.3
    data = lmrec.load_dataset(TINY_DATA)
    split = make_split(data, "mixed", 1)
    scorer = BundleScorer(str(result.bundle), "fp32")
    scorer.fit(FitContext(data, split))
    served = evaluate(scorer.score, split.valid, split.n_items).values["ndcg@10"].mean()
    assert served == pytest.approx(manifest["metrics"]["valid"]["ndcg@10"], abs=0.01)
    plain = BundleScorer(str(result.bundle), "fp32", new_items=False)  # lmrec-plain: no text term either
    plain.fit(FitContext(data, split))
    history = split.valid.histories[:8]
    users = plain.rec.users.vectors([[data.item_ids[i] for i in h] for h in history])
    _, matrix = plain.rec.catalogue.matrix()
    assert np.allclose(plain.score(history), (users @ matrix.T)[:, plain.to_bundle], atol=1e-5)
    assert not np.allclose(scorer.score(history), plain.score(history), atol=1e-3)
    with pytest.raises(LmrecError, match="config text_weight=-1: must be a number from 0 to 10"):
        train(TINY_DATA, tmp_path / "c", split="mixed", config=_config(tiny_bert_dir, text_weight=-1), progress=False)
    with pytest.raises(LmrecError, match=r"config centred_text_weight=0.3: scores items without a residual and "
                                         r"needs them borrowing \(residual true, borrow_k >= 1\)"):
        train(TINY_DATA, tmp_path / "c", split="mixed", config=dataclasses.replace(cfg, borrow_k=0), progress=False)
    with pytest.raises(LmrecError, match=r"config centred_text_weight=-1: must be a number from 0 to 10, or null "
                                         r"\(chosen with text_weight\)"):
        train(TINY_DATA, tmp_path / "c", split="mixed", config=_config(tiny_bert_dir, centred_text_weight=-1),
              progress=False)
    with pytest.raises(LmrecError, match="config text_items=13: must be at most max_history=12"):
        train(TINY_DATA, tmp_path / "c", split="mixed", config=_config(tiny_bert_dir, text_items=13), progress=False)


def test_the_test_like_validation_trains_the_kept_models_epochs_or_is_skipped_when_they_do_not_fit(
        tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    cfg = _config(tiny_bert_dir, objectives=())
    history = [{"phase": "start", "epoch": 0, "valid_ndcg@10": 0.1},
               *({"phase": "user", "epoch": e, "valid_ndcg@10": v, "seconds": 2.0, "valid_seconds": 1.0}
                 for e, v in ((1, 0.2), (2, 0.4), (3, 0.3))),
               {"phase": "user2", "epoch": 1, "valid_ndcg@10": 0.9, "seconds": 50.0, "valid_seconds": 0.0}]
    # the user phase's peak (not a later phase's), at the median time of its epochs
    assert _train.Trainer.peak_epochs(SimpleNamespace(history=history, cfg=cfg)) == (2, 6.0)  # type: ignore[arg-type]
    monkeypatch.setattr(_train.Trainer, "peak_epochs", lambda self: (1, 0.0))
    result = train(TINY_DATA, tmp_path / "one", split="mixed", seed=1, config=cfg, progress=False)
    text = json.loads((result.bundle / "manifest.json").read_text())["training"]["text_term"]
    assert text["chosen_on"] == "test-like validation" and text["test_like"]["epochs"] == 1
    lines: list[str] = []
    monkeypatch.setattr(_train.Trainer, "peak_epochs", lambda self: (3, 3600.0))
    result = train(TINY_DATA, tmp_path / "late", split="mixed", seed=1, config=cfg, progress=False, budget=30,
                   log=lines.append)  # an hour for its epochs: more than the 30-min budget leaves
    training = json.loads((result.bundle / "manifest.json").read_text())["training"]
    assert training["budget"] == {"minutes": 30, "cut": ["test_like"]}
    assert training["text_term"]["chosen_on"] == "validation" and "test_like" not in training["text_term"]
    assert any(line.startswith("warning: test-like validation skipped: its 3 epoch(s) take about 60.0 min, 2")
               for line in lines)


@pytest.mark.parametrize("agrees", [True, False])
def test_the_export_keeps_trainings_catalogue_vectors_only_when_the_fp32_graph_gives_them(
        tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        agrees: bool) -> None:
    if not agrees:  # vectors that are not the encoder's (e.g. bf16 on a GPU): the export embeds again
        real = _train.Trainer.__init__

        def shifted(self: object, *args: object) -> None:
            real(self, *args)
            self.tower.base += 0.01  # type: ignore[attr-defined]

        monkeypatch.setattr(_train.Trainer, "__init__", shifted)
    cfg = _config(tiny_bert_dir, objectives=("text",), residual=False, adapter=False, epochs=1)
    bundle = train(TINY_DATA, tmp_path / "b", seed=0, config=cfg, progress=False).bundle
    err = capsys.readouterr().err
    assert ("catalogue vectors from training kept" in err) == agrees
    assert ("catalogue embedded by the fp32 graph" in err) != agrees
    rec = lmrec.Recommender.load(bundle, precision="fp32")
    data = lmrec.load_dataset(TINY_DATA)
    stored = rec.catalogue.vectors(data.item_ids)
    assert np.min(np.sum(stored * rec.embed_texts(data.item_texts), axis=1)) >= 0.99999


def _interrupted_after_the_text_stage(cfg: TrainConfig, out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train into `out` until the text stage is saved, then interrupt (Ctrl-C) before any user epoch; its stage file."""
    with monkeypatch.context() as patch:
        patch.setattr(_train.Trainer, "validate_start", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train(TINY_DATA, out, seed=0, config=cfg, progress=False, budget=30)
    return _train.checkpoint_dir(out) / "stage-text.pt"


def test_resume_skips_a_finished_text_stage(tiny_bert_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tiny_bert_dir, objectives=("text",))
    out = tmp_path / "b"
    assert _interrupted_after_the_text_stage(cfg, out, monkeypatch).is_file()
    lines: list[str] = []
    result = train(TINY_DATA, out, seed=0, config=cfg, resume=True, progress=False, log=lines.append)
    assert not [line for line in lines if line.startswith("text")], "fine-tuned again"
    assert "text" in json.loads((result.bundle / "manifest.json").read_text())["training"]


def test_a_resumed_stage_counts_the_budget_its_run_spent(tiny_bert_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tiny_bert_dir, objectives=("text",))
    out = tmp_path / "b"
    stage_file = _interrupted_after_the_text_stage(cfg, out, monkeypatch)
    stage = torch.load(stage_file, weights_only=False)
    assert 0 < stage["elapsed"] < 600
    stage["elapsed"] = 40 * 60.0  # the run before spent 40 minutes before its text stage was saved
    torch.save(stage, stage_file)
    lines: list[str] = []
    result = train(TINY_DATA, out, seed=0, config=cfg, resume=True, progress=False, budget=30, log=lines.append)
    assert "resumed: 40.0 min of the 30-min --budget spent before (in the stages kept)" in lines
    assert any(line.startswith("warning: the passes over the catalogue took") for line in lines)
    assert [h["epoch"] for h in result.history] == [0, 1]  # one epoch past a spent budget; the model is kept
    cut = json.loads((result.bundle / "manifest.json").read_text())["training"]["budget"]["cut"]
    assert cut == ["user", "test_like"]
    assert any("--budget cut user short" in line for line in lines)
    assert result.seconds > 40 * 60


def test_budget_and_split_flags_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "x"), "--budget", "-1"]) == 2
    assert "--budget -1.0: must be a number of minutes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "x"), "--split", "temporal"])
    assert exit_.value.code == 2 and "invalid choice: 'temporal'" in capsys.readouterr().err
    with pytest.raises(LmrecError, match="--split 'temporal'"):
        train(TINY_DATA, tmp_path / "x", split="temporal")
    assert not (tmp_path / "x").exists()


def _recbole_shop(folder: Path, rng: np.random.Generator) -> str:
    """RecBole atomic files as exported from a shop: typed extra columns and side files lmrec ignores."""
    nouns, colours = ["pen", "notebook", "stapler", "folder", "marker", "binder"], ["red", "blue", "black", "green"]
    items = [f"i{n}\t{colours[n % 4]} {nouns[n % 6]} {n}\t{1 + n % 7}.5\tbrand{n % 3}\t{nouns[n % 6]}s office"
             for n in range(48)]
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\tprice:float\tbrand:token\tcategories:token_seq\n"
                                      + "\n".join(items) + "\n")
    rows = [f"u{u}\ti{(u + 6 * k + int(rng.integers(3))) % 48}\t{1 + k % 5}.0\t{100 * u + k}\tok"
            for u in range(40) for k in range(6)]
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
                                       + "\n".join(rows) + "\n")
    (folder / "shop.user").write_text("user_id:token\tage:float\nu1\t30\n")
    return f"recbole:{folder}"


def _titles_with_mixed_ids(folder: Path, rng: np.random.Generator) -> str:
    """A catalogue of titles only, ids numbers in one file and strings in the other."""
    words = ["Alien", "Heat", "Fargo", "Brazil", "Ran", "Vertigo", "Psycho", "Jaws"]
    items = [{"id": n, "title": f"{words[n % 8]} {n} ({1950 + n})"} for n in range(48)]
    inter = [{"user": u, "item": str((u + 5 * k + int(rng.integers(3))) % 48)} for u in range(40) for k in range(6)]
    for name, rows in (("items.jsonl", items), ("interactions.jsonl", inter)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{folder}"


@pytest.mark.parametrize("make", [_recbole_shop, _titles_with_mixed_ids])
def test_data_as_users_bring_it_trains_and_serves_with_the_defaults(make, tiny_bert_dir: Path,
                                                                    tmp_path: Path) -> None:
    """No config, no --set: text stage, search, export and recommend on files as users have them."""
    (tmp_path / "data").mkdir()
    spec = make(tmp_path / "data", np.random.default_rng(0))
    out = tmp_path / "bundle"
    assert main(["train", "--data", spec, "--out", str(out), "--base-model", str(tiny_bert_dir), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["searched"] and "text" in manifest["training"]
    rec = lmrec.Recommender.load(out, device="cpu")
    first = rec.item_ids()[0]
    assert rec.recommend(history=[first], k=5) and rec.precision in ("int8", "fp32")
