"""`Trainer`: the state of one training run — item tower, user model, optimiser, history — and
its phases: user-model epochs over frozen text vectors, and encoder fine-tuning (objective `next`).

Every epoch is validated (NDCG@10 on the split's validation cases, exactly as the SDK scores the
exported bundle) and the best model of any phase is kept; `state_dict` holds everything a resumed
run needs to continue with the same numbers.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from lmrec import progress_bar

from ._config import TrainConfig

ENCODER_CHECKPOINT_EVERY = 25  # steps of the encoder phase between checkpoints
BONUS_GRID = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
WARM_COST = 0.03  # the most of warm targets' validation NDCG@10 the new-item bonus may cost
RECENT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # weights of the last items in the served user vector
TEXT_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # weights β of the text term in the served score
CENTRED_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1)  # weights C of its centred part on new items


def log_line(message: str) -> None:
    print(f"[lmrec train] {message}", file=sys.stderr, flush=True)


def text_rule(rows: list[dict[str, Any]]) -> int:
    """The row of (β, C) to ship, rows in grid order (β, then C). Where the cases have new
    targets: among the rows of the least C, the most NDCG@10 on them while warm targets keep at
    least 1 - WARM_COST of theirs at β 0 (the bonus's rule: the text term is what new items have
    beyond borrowed residuals); then, of every row within that floor that ranks new targets at
    least as well, the one that keeps warm targets best: the centred part's gain goes to warm
    targets, new ones keep what β alone gave them. Else the most NDCG@10. The first of equals:
    the least β, then the least C."""
    if rows[0]["new"] is None:
        return max(range(len(rows)), key=lambda n: rows[n]["ndcg@10"])
    floor = (1 - WARM_COST) * rows[0]["warm"]
    allowed = [n for n, r in enumerate(rows) if r["warm"] >= floor]
    least = rows[0].get("centred", 0.0)  # absent from reports written before the centred part
    first = max((n for n in allowed if rows[n].get("centred", 0.0) == least), key=lambda n: rows[n]["new"])
    return max((n for n in allowed if rows[n]["new"] >= rows[first]["new"]), key=lambda n: rows[n]["warm"])


def pooled_rows(rows: list[dict[str, Any]], values: np.ndarray, new: np.ndarray) -> list[dict[str, Any]]:
    """`rows`' β with NDCG@10 on all, new and warm targets of the cases `values` (one row of
    NDCG@10 per case each) holds, `new` marking those whose target is a new item."""
    mixed = bool(new.any() and not new.all())
    return [{"beta": r["beta"], "centred": r["centred"], "ndcg@10": float(v.mean()),
             "new": float(v[new].mean()) if mixed else None, "warm": float(v[~new].mean()) if mixed else None}
            for r, v in zip(rows, values, strict=True)]


def sample_pool(seen: np.ndarray, softmax_items: int) -> np.ndarray | None:
    """The training items a step's softmax samples from, when they are more than `softmax_items`
    (objectives.catalogue_sample); None: the softmax covers them all."""
    trained = np.flatnonzero(seen)
    return trained if 0 < softmax_items < len(trained) else None


class Trainer:
    """All training state of one run, checkpointable at epoch boundaries."""

    def __init__(self, data: Any, split: Any, cfg: TrainConfig, seed: int, device: str, progress: bool,
                 base_vectors: np.ndarray, log: Callable[[str], None] = log_line) -> None:
        import torch
        from lmrec.evaluation import training_items

        from ._model import ItemTower, UserModel

        self.data, self.split, self.cfg, self.seed = data, split, cfg, seed
        self.device, self.progress, self.log = torch.device(device), progress, log
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.seen = training_items(split)
        self.unseen = torch.from_numpy(~self.seen).to(self.device)
        self.counts = split.train_counts()
        self.rows = self._cut()
        self.sample_pool = sample_pool(self.seen, cfg.softmax_items)
        # popularity prior of the training softmax: the user model need not learn popularity into user
        # vectors, where it would outrank every new item (which has no count) on the cold split
        self.prior = (torch.from_numpy(cfg.popularity_prior * np.log1p(self.counts)).float().to(self.device)
                      if cfg.popularity_prior > 0 else None)
        self.new_items = self._new_items_rule(cfg)
        self.tower = ItemTower(torch.from_numpy(base_vectors), torch.from_numpy(self.seen), cfg.adapter,
                               cfg.residual, self._borrow_matrix(base_vectors)).to(self.device)
        self.bonus = 0.0  # added to new items' scores (calibrate_bonus sets it after training)
        self.recent_weight = 0.0  # of the last items in the user vector (calibrate sets it after training)
        self.text_weight = 0.0  # β of the text term in the served score (calibrate sets it after training)
        self.centred_weight = 0.0  # C of its centred part on new items (chosen with β)
        self.valid_new = split.new_targets(split.valid)  # validation cases whose target is a new item
        self.user = UserModel(base_vectors.shape[1], cfg.max_history, cfg.hidden, cfg.layers, cfg.heads,
                              cfg.dropout).to(self.device)
        self.opt = self._optimizer()
        self.encoder_states: dict[str, dict[str, Any]] = {}  # "mlm" / "finetuned" weights when changed
        self.encoder_version = "base"
        self.phase = 0
        self.epoch = 0  # epochs (or encoder steps) done in the current phase
        self.stale = 0  # epochs since the current phase last improved on its own best
        self.phase_best = -1.0
        self.elapsed = 0.0  # seconds of this run so far, across resumes
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"valid": -1.0}
        # this trainer's own torch generator state (dropout): the search's candidates train in turns,
        # and each must draw as it would alone, so that the winner is the model its settings train
        # by themselves (`--config` of the recorded settings gives the same bundle)
        self.torch_rng = torch.get_rng_state()
        self.partial_state: dict[str, Any] | None = None
        self.label = ""  # prefixes the log lines (a search names its candidates)

    # -- new items ------------------------------------------------------------------------------
    def _new_items_rule(self, cfg: TrainConfig) -> Any:
        from lmrec import NewItemsInfo

        if cfg.borrow_k < 1 or not cfg.residual:
            return None
        return NewItemsInfo(cfg.borrow_k, cfg.borrow_temperature, cfg.borrow_shrink, 0.0)

    def _table(self, text: np.ndarray, residual: np.ndarray) -> Any:
        """The SDK's residual table over the trained items (ids: their indices as strings)."""
        from lmrec import ResidualTable

        rows = np.flatnonzero(self.seen)
        return ResidualTable([str(i) for i in rows], text[rows], residual[rows], self.new_items)

    def _borrow_matrix(self, base_vectors: np.ndarray) -> Any:
        """Sparse (n, n): each trained item's neighbours among the other trained items, as the SDK
        picks them for a new item; the user phase lends dropped items these residuals."""
        import torch

        if self.new_items is None or self.cfg.residual_dropout <= 0 or self.seen.sum() < 2:
            return None
        rows = np.flatnonzero(self.seen)
        text = base_vectors / np.maximum(np.linalg.norm(base_vectors, axis=1, keepdims=True), 1e-12)
        table = self._table(text, np.zeros_like(text))
        neighbours, weights = table.neighbours(text[rows], exclude=np.arange(len(rows)))
        i = np.repeat(rows, neighbours.shape[1])
        j = rows[neighbours].ravel()
        n = len(base_vectors)
        return torch.sparse_coo_tensor(np.stack([i, j]), weights.ravel(), (n, n),
                                       check_invariants=True).coalesce().to(self.device)

    def calibrate(self, floor: float | None) -> dict[str, Any]:
        """The serving settings, chosen on validation after training: for each weight of the last
        items in the user vector (`RECENT_GRID`, or `cfg.recent_weight`), the new-item bonus by
        `calibrate_bonus` where validation has new targets (`floor` set); the weight whose
        validation NDCG@10 is best, with its bonus, wins. The user model ranks by what a history
        says overall; its last items say what the user is on now, and lift new items that resemble
        them (bench/RESULTS.md, "The last items in the user vector")."""
        weights = RECENT_GRID if self.cfg.recent_weight is None else (float(self.cfg.recent_weight),)
        tried = []
        for weight in weights:
            self.recent_weight = weight
            bonus = self.calibrate_bonus(floor) if floor is not None else {"bonus": self.bonus}
            tried.append({"weight": weight, "bonus": bonus, "ndcg@10": self.validate()["ndcg@10"]})
        best = max(tried, key=lambda t: t["ndcg@10"])  # the first of equals: the least weight
        self.recent_weight, self.bonus = best["weight"], float(best["bonus"]["bonus"])
        self.log(f"last {self.cfg.recent_items} items weigh {self.recent_weight:g} in the user vector: valid "
                 f"ndcg@10 {best['ndcg@10']:.4f} ({tried[0]['ndcg@10']:.4f} at weight 0)")
        if best["bonus"].get("chosen_on") == "validation":
            chosen = best["bonus"]
            row = next(r for r in chosen["grid"] if r["bonus"] == self.bonus)
            self.log(f"new-item bonus {self.bonus:g}: new targets {row['new']:.4f} (untrained encoder "
                     f"{chosen['floor']:.4f}{'' if chosen['reached_floor'] else ', not reached'}), warm targets "
                     f"{row['warm']:.4f} ({chosen['grid'][0]['warm']:.4f} without)")
        grid = [{"weight": t["weight"], "bonus": t["bonus"]["bonus"], "ndcg@10": t["ndcg@10"]} for t in tried]
        recent = {"items": self.cfg.recent_items, "weight": self.recent_weight,
                  "chosen_on": "config" if self.cfg.recent_weight is not None else "validation", "grid": grid}
        return {"new_items": best["bonus"], "recent": recent}

    def centred_grid(self) -> tuple[float, ...]:
        """The weights C of the text term's centred part to try: `cfg.centred_text_weight`, else
        `CENTRED_GRID` where validation has new targets that borrow residuals, else none."""
        if self.cfg.centred_text_weight is not None:
            return (float(self.cfg.centred_text_weight),)
        return CENTRED_GRID if self.new_items is not None and self.valid_new.any() else (0.0,)

    def text_grid(self, floor: float | None, cases: Any = None, centred: Sequence[float] | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], np.ndarray]:
        """Each β of the text term (`TEXT_GRID`, or `cfg.text_weight`) at the chosen weight of the
        last items, with its own bonus by `calibrate_bonus` (on validation, where `floor` is set),
        and with each weight of its centred part (`centred`, by default `centred_grid`; the bonus
        of the least), measured on `cases` (validation by default). Returns (rows, each row's
        bonus report, each row's NDCG@10 per case)."""
        betas = TEXT_GRID if self.cfg.text_weight is None else (float(self.cfg.text_weight),)
        weights = self.centred_grid() if centred is None else tuple(centred)
        rows, bonuses, values = [], [], []
        for beta in betas:
            self.text_weight, self.centred_weight = beta, weights[0]
            bonus = self.calibrate_bonus(floor) if floor is not None else {"bonus": self.bonus}
            for weight in weights:
                self.centred_weight = weight
                metrics, per_case = self._validate(cases)
                bonuses.append(bonus)
                values.append(per_case)
                rows.append({"beta": beta, "centred": weight, "bonus": self.bonus, "ndcg@10": metrics["ndcg@10"],
                             "new": metrics.get("ndcg@10_new"), "warm": metrics.get("ndcg@10_warm")})
        return rows, bonuses, np.stack(values)

    def read_test_like(self, probe: Trainer, floor: float | None) -> dict[str, Any]:
        """One test-like validation's reading of the text term: `probe` (these settings trained on
        the split shorter; `floor` the untrained encoder's NDCG@10 on its validation's new
        targets) scores each β on its test cases at this model's weight of the last items. What
        `calibrate_text` pools, read as each probe ends so that only one is held at a time."""
        started = time.perf_counter()
        probe.recent_weight = self.recent_weight
        grid, _, per_case = probe.text_grid(floor, probe.split.test, self.centred_grid())
        return {"grid": grid, "cases": len(probe.split.test), "epochs": probe.epoch, "best_epoch": probe.best["epoch"],
                "values": per_case, "new": probe.split.new_targets(probe.split.test),
                "seconds": time.perf_counter() - started}

    def calibrate_text(self, floor: float | None, readings: Sequence[dict[str, Any]] = (),
                       known: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """β of the text term and C of its centred part, by `text_rule` over `text_grid`: on the
        test-like validations' `readings` (`read_test_like` of trainers of these settings on the
        split 1, 2, … interactions shorter), their cases pooled, when given; or as an earlier run
        reported it (`known`: a resumed export); else on validation. The row chosen ships with the
        bonus this model's validation gave it. Returns (the report, the bonus report of the row chosen)."""
        rows, bonuses, _ = self.text_grid(floor)
        report: dict[str, Any] = {"items": self.cfg.text_items, "warm_cost": WARM_COST, "grid": rows,
                                  "chosen_on": "config" if self.cfg.text_weight is not None else "validation"}
        judged = rows
        if known is not None:
            judged = known["grid"]
            report["chosen_on"], report["test_like"] = "test-like validation", known
        elif readings:
            origins = [{k: r[k] for k in ("grid", "cases", "epochs", "best_epoch")} for r in readings]
            judged = (origins[0]["grid"] if len(origins) == 1 else
                      pooled_rows(rows, np.concatenate([r["values"] for r in readings], axis=1),
                                  np.concatenate([r["new"] for r in readings])))
            report["chosen_on"] = "test-like validation"
            report["test_like"] = {"grid": judged, "cases": sum(o["cases"] for o in origins),
                                   "epochs": max(o["epochs"] for o in origins),
                                   "best_epoch": max(o["best_epoch"] for o in origins),
                                   "seconds": round(sum(r["seconds"] for r in readings), 1)}
            if len(origins) > 1:
                report["test_like"]["origins"] = origins
        n = text_rule(judged)
        self.text_weight, self.centred_weight, self.bonus = rows[n]["beta"], rows[n]["centred"], rows[n]["bonus"]
        report["weight"], report["centred_weight"] = self.text_weight, self.centred_weight
        line = ", ".join(f"{k} {judged[n][k]:.4f} ({judged[0][k]:.4f} at β 0)" for k in ("ndcg@10", "new", "warm")
                         if judged[n][k] is not None)
        many = f" ({len(readings)} of them, pooled)" if len(readings) > 1 else ""
        self.log(f"the text term weighs β {self.text_weight:g} (last {self.cfg.text_items} item(s)), its centred part "
                 f"on new items C {self.centred_weight:g}, on the {report['chosen_on']}{many}: {line}")
        return report, bonuses[n]

    def calibrate_bonus(self, floor: float, grid: Sequence[float] = BONUS_GRID) -> dict[str, Any]:
        """The new-item bonus, on validation of every user: new items must not cost the warm targets
        (items with a residual) more than WARM_COST of their NDCG@10 without a bonus; within that,
        the least bonus that ranks new targets at least at `floor` (the untrained encoder's NDCG@10
        on them), else the one that ranks them best. Only where validation has new targets;
        `cfg.new_item_bonus` fixes it instead."""
        from lmrec.evaluation import evaluate

        if self.cfg.new_item_bonus is not None or not self.valid_new.any() or self.new_items is None:
            self.bonus = float(self.cfg.new_item_bonus or 0.0)
            return {"bonus": self.bonus, "chosen_on": "config" if self.cfg.new_item_bonus is not None else "nothing"}
        unbonused = self.score_fn(bonus=0.0)
        cases = self.split.valid
        scores = [unbonused(cases.histories[s:s + 512]) for s in range(0, len(cases), 512)]
        unseen = (~self.seen).astype(np.float32)
        rows = []
        for bonus in grid:
            pos = iter(scores)
            values = evaluate(lambda h, b=bonus, it=pos: next(it) + b * unseen, cases, self.split.n_items,
                              batch_size=512).values["ndcg@10"]
            rows.append({"bonus": bonus, "ndcg@10": float(values.mean()), "new": float(values[self.valid_new].mean()),
                         "warm": float(values[~self.valid_new].mean()) if (~self.valid_new).any() else 0.0})
        allowed = [r for r in rows if r["warm"] >= (1 - WARM_COST) * rows[0]["warm"]]  # bonus 0 always is
        reaching = [r for r in allowed if r["new"] >= floor]
        chosen = reaching[0] if reaching else max(allowed, key=lambda r: r["new"])
        self.bonus = float(chosen["bonus"])
        return {"bonus": self.bonus, "chosen_on": "validation", "floor": floor, "warm_cost": WARM_COST,
                "grid": rows, "reached_floor": bool(reaching)}

    # -- state ----------------------------------------------------------------------------------
    def _optimizer(self) -> Any:
        import torch

        groups = [{"params": list(self.user.parameters()), "lr": self.cfg.lr}]
        if self.tower.adapter is not None:
            groups.append({"params": list(self.tower.adapter.parameters()), "lr": self.cfg.adapter_lr})
        if self.tower.residual is not None:
            groups.append({"params": [self.tower.residual], "lr": self.cfg.residual_lr})
        return torch.optim.Adam(groups, weight_decay=self.cfg.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        return {
            "tower": self.tower.state_dict(),
            "user": self.user.state_dict(),
            "opt": self.opt.state_dict(),
            "encoder_states": self.encoder_states,
            "encoder_version": self.encoder_version,
            "phase": self.phase,
            "epoch": self.epoch,
            "stale": self.stale,
            "phase_best": self.phase_best,
            "elapsed": self.elapsed,
            "history": self.history,
            "best": self.best,
            "partial": self.partial_state,
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.torch_rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tower.load_state_dict(state["tower"])
        self.user.load_state_dict(state["user"])
        self.opt.load_state_dict(state["opt"])
        self.encoder_states, self.encoder_version = state["encoder_states"], state["encoder_version"]
        self.phase, self.epoch, self.stale = state["phase"], state["epoch"], state["stale"]
        self.phase_best, self.elapsed = state["phase_best"], state["elapsed"]
        self.history, self.best, self.partial_state = state["history"], state["best"], state["partial"]
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng = state["torch_rng"]

    def _snapshot(self, valid: float, phase: str) -> None:
        self.best = {"valid": valid, "phase": phase, "epoch": self.epoch, "encoder_version": self.encoder_version,
                     "tower": copy.deepcopy(self.tower.state_dict()), "user": copy.deepcopy(self.user.state_dict())}

    def restore_best(self) -> None:
        self.tower.load_state_dict(self.best["tower"])
        self.user.load_state_dict(self.best["user"])

    # -- scoring --------------------------------------------------------------------------------
    def item_vectors(self, new_items: bool = True) -> Any:
        """What the bundle's catalogue will hold: trained items their own residual, the others
        the residual they borrow (computed by the SDK's own ResidualTable); with `new_items`
        False, the others their text vector alone (`lmrec-plain`)."""
        import torch

        self.tower.eval()
        with torch.no_grad():
            vectors = self.tower()
            unseen = np.flatnonzero(~self.seen)
            if (not new_items or self.new_items is None or self.tower.residual is None or not len(unseen)
                    or not self.seen.any()):
                return vectors
            text = self.tower.text().float().cpu().numpy()
            table = self._table(text, self.tower.residuals().float().cpu().numpy())
            borrowed = table.apply([f"new:{i}" for i in unseen], text[unseen])
            vectors[torch.from_numpy(unseen).to(self.device)] = torch.from_numpy(borrowed).to(vectors)
            return vectors

    def score_fn(self, bonus: float | None = None,
                 new_items: bool = True) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
        """Scores over the catalogue exactly as the SDK computes them from the exported bundle
        (with the new-item bonus, `self.bonus` unless given); with `new_items` False, as
        `lmrec-plain` does: no borrowed residuals, no bonus, no text term."""
        import torch

        from .objectives import gather, left_pad

        vectors = self.item_vectors(new_items)
        self.user.eval()
        add = (self.bonus if bonus is None else bonus) if new_items else 0.0
        offset = torch.from_numpy((~self.seen).astype(np.float32) * add).to(self.device) if add else None
        weight, last = self.recent_weight, self.cfg.recent_items
        beta, text_items = (self.text_weight if new_items else 0.0), self.cfg.text_items
        centred = self.centred_weight if new_items and self.new_items is not None else 0.0
        with torch.no_grad():
            text = self.tower.text() if beta or centred else None
            if centred:  # as the SDK serves it: t̄ of the residual table's (float16) text vectors
                unseen = torch.from_numpy(~self.seen).to(self.device)
                mean = torch.from_numpy(self._table(text.float().cpu().numpy(), np.zeros(tuple(text.shape), np.float32))
                                        .text_mean).to(text)

        def score(histories: Sequence[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                idx = torch.from_numpy(left_pad(histories, self.cfg.max_history)).to(self.device)
                x, m = gather(vectors, idx)
                user = self.user.last(x, m)
                if weight:  # as the SDK serves it (lmrec.UserModelInfo): (1 - w) u + w |u| m̂
                    recent = torch.nn.functional.normalize((x[:, -last:] * m[:, -last:, None]).sum(1), dim=-1)
                    user = (1 - weight) * user + weight * user.norm(dim=-1, keepdim=True) * recent
                out = user @ vectors.T
                if text is not None:  # as the SDK serves it (lmrec.UserModelInfo): + β |u| r̂·t
                    t, tm = gather(text, idx)
                    r = torch.nn.functional.normalize((t[:, -text_items:] * tm[:, -text_items:, None]).sum(1), dim=-1)
                    cos = r @ text.T
                    term = beta * cos
                    if centred:  # + C |u| (r̂·t − r̂·t̄) on new items
                        term = term + centred * (cos - (r @ mean)[:, None]) * unseen
                    out = out + user.norm(dim=-1, keepdim=True) * term
                return (out if offset is None else out + offset).float().cpu().numpy()

        return score

    def validate(self, cases: Any = None, new_items: bool = True) -> dict[str, Any]:
        """Metrics on `cases` (validation by default), served as `score_fn(new_items=…)` scores;
        where some targets are new items, also NDCG@10 on them and on the rest."""
        return self._validate(cases, new_items)[0]

    def _validate(self, cases: Any = None, new_items: bool = True) -> tuple[dict[str, Any], np.ndarray]:
        """`validate`, and NDCG@10 of each case."""
        from lmrec.evaluation import evaluate

        cases = self.split.valid if cases is None else cases
        new = self.split.new_targets(cases)
        result = evaluate(self.score_fn(new_items=new_items), cases, self.split.n_items)
        out = {m: float(v.mean()) for m, v in result.values.items()}
        values = result.values["ndcg@10"]
        if new.any() and not new.all():
            out["ndcg@10_new"] = float(values[new].mean())
            out["ndcg@10_warm"] = float(values[~new].mean())
        return out, values

    def pieces_report(self, served: dict[str, Any]) -> dict[str, Any] | None:
        """The new-item pieces together (borrowed residuals, bonus, text term) against the same
        model without them (`lmrec-plain`), on validation: `served` is `validate()` of the
        calibrated model. Each piece's rule counts from a row that already carries the pieces
        chosen before it, so only this says what they cost warm targets in all. None where
        validation has no mix of new and warm targets."""
        if "ndcg@10_warm" not in served:
            return None
        without = self.validate(new_items=False)
        keys = {"ndcg@10": "ndcg@10", "warm": "ndcg@10_warm", "new": "ndcg@10_new"}
        warm = without["ndcg@10_warm"]
        share = served["ndcg@10_warm"] / warm if warm > 0 else None
        self.log(f"new-item pieces on validation: warm targets {served['ndcg@10_warm']:.4f} "
                 f"({'n/a' if share is None else f'{share:.1%}'} of {warm:.4f} without them), new targets "
                 f"{served['ndcg@10_new']:.4f} ({without['ndcg@10_new']:.4f}), all {served['ndcg@10']:.4f} "
                 f"({without['ndcg@10']:.4f})")
        return {"served": {k: served[m] for k, m in keys.items()}, "without": {k: without[m] for k, m in keys.items()},
                "warm_share": share}

    def validate_start(self, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """The untrained model (user = most recent item, identity adapter, no residuals) is the
        first candidate: a run never ships a model that is worse on validation than no training
        (on the cold split, training can cost new items more than it teaches). `known`: its
        metrics as another candidate measured them (the untrained model is the same for all)."""
        start = time.perf_counter()
        metrics = known or self.validate()
        ndcg = metrics["ndcg@10"]
        self.history.append({"phase": "start", "epoch": 0, "loss": None, "valid_ndcg@10": ndcg,
                             "valid_recall@10": metrics["recall@10"], "seconds": 0.0,
                             "valid_seconds": round(time.perf_counter() - start, 3)})
        if known is None:
            self.log(f"untrained: valid ndcg@10 {ndcg:.4f}")
        self._snapshot(ndcg, "start")
        return metrics

    # -- the user phase -------------------------------------------------------------------------
    def user_epoch(self) -> float:
        """One epoch of the user phase, drawing from this trainer's own torch generator."""
        import torch

        if self.device.type != "cpu":  # CUDA draws dropout from the device's generator, shared: on CPU only
            return self._user_epoch()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_rng)
            loss = self._user_epoch()
            self.torch_rng = torch.get_rng_state()
        return loss

    def _cut(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The user model's training windows, left-padded; disjoint without `rng`."""
        from .objectives import left_pad, windows

        cfg = self.cfg
        return left_pad(windows(self.split.train, cfg.max_history, cfg.window_overlap, rng), cfg.max_history + 1)

    def _user_epoch(self) -> float:
        import torch

        from .objectives import (
            augment,
            catalogue_sample,
            full_softmax_ce,
            gather,
            left_pad,
            nt_xent,
            pair_infonce,
            sampled_softmax,
        )

        cfg = self.cfg
        if cfg.window_overlap:  # cut afresh each epoch, from the trainer's own (checkpointed) stream
            self.rows = self._cut(self.rng)
        self.tower.train()
        self.user.train()
        order = self.rng.permutation(len(self.rows))
        n_items = self.split.n_items
        total = 0.0
        bar = progress_bar(range(0, len(order), cfg.batch_size), desc=f"epoch {self.epoch + 1}", enabled=self.progress,
                   unit="batch", leave=False)
        for start in bar:
            rows = self.rows[order[start:start + cfg.batch_size]]
            keep = None
            if cfg.residual_dropout > 0 and self.tower.residual is not None:
                keep = torch.from_numpy((self.rng.random(n_items) >= cfg.residual_dropout).astype(np.float32)).to(
                    self.device
                )
            if self.sample_pool is None:
                vectors, cand = self.tower(keep), None
            else:
                # the tower runs over this step's items only: candidates first, then the other inputs;
                # rows are renumbered to positions among them (PAD and MASK stay)
                targets = rows[:, 1:][rows[:, 1:] >= 0]
                cand, log_p, pos = catalogue_sample(targets, self.sample_pool, cfg.softmax_items, self.rng)
                history = rows[:, :-1]
                items = np.concatenate([cand, np.setdiff1d(history[history >= 0], cand)])
                lookup = np.empty(n_items, dtype=np.int64)
                lookup[items] = np.arange(len(items))
                rows = np.where(rows >= 0, lookup[np.maximum(rows, 0)], rows)
                vectors = self.tower.subset(torch.from_numpy(items).to(self.device), keep)
            inputs = torch.from_numpy(rows[:, :-1]).to(self.device)
            labels = torch.from_numpy(rows[:, 1:]).to(self.device)
            x, m = gather(vectors, inputs)
            out = self.user(x, m)
            sel = labels >= 0
            if cand is None:
                loss = full_softmax_ce(out[sel], vectors, labels[sel], self.unseen, self.prior)
            else:
                log_q = torch.from_numpy(log_p).to(self.device)
                if self.prior is not None:
                    log_q = log_q - self.prior[torch.from_numpy(cand).to(self.device)]
                loss = sampled_softmax(out[sel], vectors[:len(cand)], torch.from_numpy(pos).to(self.device), log_q)
            if "cl" in cfg.objectives and cfg.cl_weight > 0:
                seqs = [r[r >= 0] for r in rows[:, :-1]]
                views = [left_pad([augment(s, cfg.augment_ratio, self.rng) for s in seqs], cfg.max_history)
                         for _ in range(2)]
                users = [self.user.last(*gather(vectors, torch.from_numpy(v).to(self.device))) for v in views]
                loss = loss + cfg.cl_weight * nt_xent(users[0], users[1], cfg.cl_temperature)
            if "cooc" in cfg.objectives and cfg.cooc_weight > 0:
                a, b = inputs[sel], labels[sel]
                pick = torch.from_numpy(self.rng.permutation(len(a))[:4 * cfg.batch_size]).to(self.device)
                a, b = a[pick], b[pick]
                valid = a >= 0
                a, b = a[valid], b[valid]
                if len(a) > 1:
                    loss = loss + cfg.cooc_weight * pair_infonce(vectors[a], vectors[b], cfg.cooc_temperature,
                                                                 same=b.unsqueeze(0) == b.unsqueeze(1))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item() * len(rows)
            bar.set_postfix(loss=f"{total / min(start + cfg.batch_size, len(order)):.3f}")
        return total / len(order)

    def peak_epochs(self) -> tuple[int, float]:
        """(epochs, seconds): the epoch at which the user phase peaked on validation, and how long
        that many epochs take at the median time of its epochs (validation included); a model
        trained again like this one (the test-like validation) trains that long."""
        user = [h for h in self.history if h["phase"] == "user"]
        if not user:
            return self.cfg.epochs, 0.0
        peak = int(max(user, key=lambda h: h["valid_ndcg@10"])["epoch"])
        return peak, peak * float(np.median([h["seconds"] + h.get("valid_seconds", 0.0) for h in user]))

    @property
    def phase_done(self) -> bool:
        """The current user phase has run out of epochs or of patience."""
        return self.epoch >= self.cfg.epochs or self.stale >= self.cfg.patience

    def advance_user(self, epochs: int, name: str = "user", save: Callable[[], None] | None = None) -> None:
        """Up to `epochs` more epochs of the user phase `name` (fewer once it is done)."""
        for _ in range(epochs):
            if self.phase_done:
                return
            start = time.perf_counter()
            loss = self.user_epoch()
            trained = time.perf_counter() - start
            metrics = self.validate()
            self.epoch += 1
            ndcg = metrics["ndcg@10"]
            improved = ndcg > self.best["valid"]
            self.history.append({"phase": name, "epoch": self.epoch, "loss": loss, "valid_ndcg@10": ndcg,
                                 "valid_recall@10": metrics["recall@10"], "seconds": round(trained, 3),
                                 "valid_seconds": round(time.perf_counter() - start - trained, 3)})
            self.log(f"{self.label}{name} epoch {self.epoch}: loss {loss:.4f}, valid ndcg@10 {ndcg:.4f}"
                     f"{' (best)' if improved else ''}, {trained:.1f}s")
            if improved:
                self._snapshot(ndcg, name)
            if ndcg > self.phase_best:
                self.phase_best, self.stale = ndcg, 0
            else:
                self.stale += 1
            if save is not None:
                save()

    def run_user_phase(self, name: str, save: Callable[[], None], deadline: float | None = None) -> None:
        """The user phase `name` to its early stop, or until `deadline` (time.monotonic()), after
        at least one epoch."""
        while not self.phase_done and (deadline is None or time.monotonic() < deadline or self.epoch == 0):
            self.advance_user(1, name, save)
        if not self.phase_done:
            self.log(f"{self.label}{name}: the --budget ran out after epoch {self.epoch}; keeping the best so far")

    # -- the encoder phase ----------------------------------------------------------------------
    def run_encoder_phase(self, encoder: Any, save: Callable[[], None]) -> None:
        """Objective `next` (+ `cooc`): top encoder layers, item tower and user model trained jointly
        by InfoNCE over in-batch targets + popularity-sampled negatives, logQ-corrected."""
        import torch

        from ._finetune import PartialEncoder
        from .objectives import gather, left_pad, pair_infonce, sampled_softmax

        cfg = self.cfg
        if self.epoch == 0:
            self.restore_best()  # start from the best user model of the previous phase
        partial = PartialEncoder(encoder, self.data.item_texts, cfg.finetune_layers, progress=self.progress)
        if self.partial_state is not None:
            partial.top.load_state_dict(self.partial_state["top"])
        opt = torch.optim.Adam([{"params": list(partial.top.parameters()), "lr": cfg.encoder_lr},
                                {"params": [p for g in self.opt.param_groups for p in g["params"]], "lr": cfg.lr}])
        if self.partial_state is not None:
            opt.load_state_dict(self.partial_state["opt"])
        q = np.where(self.seen, self.counts + 1.0, 0.0)  # sampling distribution of targets and negatives:
        q /= q.sum()  # training items only, as in the full softmax
        log_q = torch.from_numpy(np.log(np.where(q > 0, q, 1.0))).float().to(self.device)  # unseen: never candidates
        bar = progress_bar(total=cfg.encoder_steps, initial=self.epoch, desc="encoder", enabled=self.progress,
                   unit="step")
        running = 0.0
        torch.set_rng_state(self.torch_rng)  # one trainer from here on: its own stream, on the global generator
        while self.epoch < cfg.encoder_steps:
            partial.top.train()
            self.tower.train()
            self.user.train()
            rows = self.rows[self.rng.integers(len(self.rows), size=cfg.encoder_batch)]
            # one (prefix, next item) case per row, at a random position with a label
            cases = []
            for r in rows:
                real = np.flatnonzero(r >= 0)
                t = int(self.rng.integers(real[0] + 1, len(r)))
                cases.append((r[:t][r[:t] >= 0], int(r[t])))
            targets = np.array([c[1] for c in cases])
            previous = np.array([c[0][-1] for c in cases])
            negatives = (
                self.rng.choice(self.split.n_items, size=cfg.negatives, p=q) if cfg.negatives else np.zeros(0, np.int64)
            )
            pool = np.concatenate([targets, negatives] + ([previous] if "cooc" in cfg.objectives else []))
            unique, inverse = np.unique(pool, return_inverse=True)
            live = self.tower.transform(partial(unique.tolist()), torch.from_numpy(unique).to(self.device))
            vectors = self.tower()
            hist = torch.from_numpy(left_pad([c[0] for c in cases], cfg.max_history)).to(self.device)
            users = self.user.last(*gather(vectors.detach(), hist))
            target_pos = torch.from_numpy(inverse[:len(targets)]).to(self.device)
            loss = sampled_softmax(users, live, target_pos, log_q[torch.from_numpy(unique).to(self.device)],
                                   torch.zeros(len(targets), len(unique), dtype=torch.bool, device=self.device))
            if "cooc" in cfg.objectives and cfg.cooc_weight > 0:
                prev_pos = torch.from_numpy(inverse[len(targets) + len(negatives):]).to(self.device)
                tt = torch.from_numpy(targets).to(self.device)
                loss = loss + cfg.cooc_weight * pair_infonce(live[prev_pos], live[target_pos], cfg.cooc_temperature,
                                                             same=tt.unsqueeze(0) == tt.unsqueeze(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.epoch += 1
            running = loss.item() if self.epoch == 1 else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if self.epoch % ENCODER_CHECKPOINT_EVERY == 0 or self.epoch == cfg.encoder_steps:
                self.partial_state = {"top": partial.top.state_dict(), "opt": opt.state_dict()}
                self.torch_rng = torch.get_rng_state()
                save()
        bar.close()
        self.log(
            f"encoder: {cfg.encoder_steps} steps of objective next{' + cooc' if 'cooc' in cfg.objectives else ''}, "
            f"loss {running:.4f}; re-encoding the catalogue"
        )
        self.tower.base.copy_(torch.from_numpy(partial.encode_all(progress=self.progress)).to(self.device))
        self.encoder_states["finetuned"] = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
        self.encoder_version = "finetuned"
        self.partial_state = None


__all__ = ["Trainer", "log_line", "ENCODER_CHECKPOINT_EVERY", "BONUS_GRID", "WARM_COST"]
