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


def log_line(message: str) -> None:
    print(f"[lmrec train] {message}", file=sys.stderr, flush=True)


class Trainer:
    """All training state of one run, checkpointable at epoch boundaries."""

    def __init__(self, data: Any, split: Any, cfg: TrainConfig, seed: int, device: str, progress: bool,
                 base_vectors: np.ndarray, log: Callable[[str], None] = log_line) -> None:
        import torch
        from lmrec.evaluation import training_items

        from ._model import ItemTower, UserModel
        from .objectives import left_pad, windows

        self.data, self.split, self.cfg, self.seed = data, split, cfg, seed
        self.device, self.progress, self.log = torch.device(device), progress, log
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.seen = training_items(split)
        self.unseen = torch.from_numpy(~self.seen).to(self.device)
        self.counts = split.train_counts()
        self.rows = left_pad(windows(split.train, cfg.max_history), cfg.max_history + 1)
        # popularity prior of the training softmax: the user model need not learn popularity into user
        # vectors, where it would outrank every new item (which has no count) on the cold split
        self.prior = (torch.from_numpy(cfg.popularity_prior * np.log1p(self.counts)).float().to(self.device)
                      if cfg.popularity_prior > 0 else None)
        self.tower = ItemTower(torch.from_numpy(base_vectors), torch.from_numpy(self.seen), cfg.adapter,
                               cfg.residual).to(self.device)
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
        self.partial_state: dict[str, Any] | None = None
        self.label = ""  # prefixes the log lines (a search names its candidates)

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
        import torch

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
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        self.tower.load_state_dict(state["tower"])
        self.user.load_state_dict(state["user"])
        self.opt.load_state_dict(state["opt"])
        self.encoder_states, self.encoder_version = state["encoder_states"], state["encoder_version"]
        self.phase, self.epoch, self.stale = state["phase"], state["epoch"], state["stale"]
        self.phase_best, self.elapsed = state["phase_best"], state["elapsed"]
        self.history, self.best, self.partial_state = state["history"], state["best"], state["partial"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    def _snapshot(self, valid: float, phase: str) -> None:
        self.best = {"valid": valid, "phase": phase, "epoch": self.epoch, "encoder_version": self.encoder_version,
                     "tower": copy.deepcopy(self.tower.state_dict()), "user": copy.deepcopy(self.user.state_dict())}

    def restore_best(self) -> None:
        self.tower.load_state_dict(self.best["tower"])
        self.user.load_state_dict(self.best["user"])

    # -- scoring --------------------------------------------------------------------------------
    def item_vectors(self) -> Any:
        import torch

        self.tower.eval()
        with torch.no_grad():
            return self.tower()

    def score_fn(self) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
        """Scores over the catalogue exactly as the SDK computes them from the exported bundle."""
        import torch

        from .objectives import gather, left_pad

        vectors = self.item_vectors()
        self.user.eval()

        def score(histories: Sequence[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                idx = torch.from_numpy(left_pad(histories, self.cfg.max_history)).to(self.device)
                x, m = gather(vectors, idx)
                return (self.user.last(x, m) @ vectors.T).float().cpu().numpy()

        return score

    def validate(self) -> dict[str, Any]:
        from lmrec.evaluation import evaluate

        result = evaluate(self.score_fn(), self.split.valid, self.split.n_items)
        return {m: float(v.mean()) for m, v in result.values.items()}

    def validate_start(self) -> None:
        """The untrained model (user = most recent item, identity adapter, no residuals) is the
        first candidate: a run never ships a model that is worse on validation than no training
        (on the cold split, training can cost new items more than it teaches)."""
        start = time.perf_counter()
        metrics = self.validate()
        ndcg = metrics["ndcg@10"]
        self.history.append({"phase": "start", "epoch": 0, "loss": None, "valid_ndcg@10": ndcg,
                             "valid_recall@10": metrics["recall@10"], "seconds": 0.0,
                             "valid_seconds": round(time.perf_counter() - start, 3)})
        self.log(f"untrained: valid ndcg@10 {ndcg:.4f}")
        self._snapshot(ndcg, "start")

    # -- the user phase -------------------------------------------------------------------------
    def user_epoch(self) -> float:
        import torch

        from .objectives import augment, full_softmax_ce, gather, left_pad, nt_xent, pair_infonce

        cfg = self.cfg
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
            vectors = self.tower(keep)
            inputs = torch.from_numpy(rows[:, :-1]).to(self.device)
            labels = torch.from_numpy(rows[:, 1:]).to(self.device)
            x, m = gather(vectors, inputs)
            out = self.user(x, m)
            sel = labels >= 0
            loss = full_softmax_ce(out[sel], vectors, labels[sel], self.unseen, self.prior)
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

    def run_user_phase(self, name: str, save: Callable[[], None]) -> None:
        self.advance_user(self.cfg.epochs, name, save)

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


__all__ = ["Trainer", "log_line", "ENCODER_CHECKPOINT_EVERY"]
