"""`lmrec.trainer.train`: self-supervised training on a split's training part, exported as a bundle.

Phases, each optional except the user model:
1. `mlm` — masked-LM warm-up of the encoder on the item texts;
2. `user` — frozen text vectors (computed once, cached); the item tower (adapter + residuals) and
   the user model train with full-softmax cross-entropy over the catalogue (+ `cl`, `cooc`);
3. `encoder` — objective `next`: the encoder's top layers fine-tune with sampled InfoNCE (+ `cooc`),
   then the catalogue is re-encoded and `user2` trains the user model on the new vectors.
Everything is chosen on validation NDCG@10 (each phase early-stops on its own curve; the best
model of any phase, or the untrained one, is kept); the test cases are never looked at. A
checkpoint after every epoch makes `resume` continue exactly where an interrupted run stopped:
same numbers as an uninterrupted run.
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from .._errors import DataError, LmrecError, require
from ._config import TrainConfig

CHECKPOINT = "state.pt"
ENCODER_CHECKPOINT_EVERY = 25  # steps of the encoder phase between checkpoints
MIN_TRAIN_USERS = 2


def _log(message: str) -> None:
    print(f"[lmrec train] {message}", file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    bundle: Path
    history: list[dict[str, Any]]
    valid: dict[str, Any]
    seconds: float


def resolve_device(device: str) -> str:
    import torch

    if device not in ("cpu", "cuda", "auto"):
        raise LmrecError(f"--device {device!r}: expected cpu, cuda or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LmrecError("--device cuda: PyTorch sees no CUDA device (this torch build or host has none); use --device cpu")
    return device


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of a run writing `out` live: a sibling `OUT.ckpt/`."""
    out = Path(out).expanduser().absolute()
    return out.parent / f"{out.name}.ckpt"


def check_out(out: str | Path, overwrite: bool) -> None:
    """Refuse before any work: an existing --out without overwrite, or something that is not a bundle."""
    out = Path(out).expanduser()
    if not out.exists():
        return
    if not overwrite:
        raise LmrecError(f"--out {out}: already exists (pass --overwrite to replace it)")
    if not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file()):
        raise LmrecError(f"--out {out}: exists and is not a bundle; refusing to replace it")


class Trainer:
    """All training state of one run, checkpointable at epoch boundaries."""

    def __init__(self, data: Any, split: Any, cfg: TrainConfig, seed: int, device: str, progress: bool,
                 base_vectors: np.ndarray, log: Callable[[str], None] = _log) -> None:
        import torch

        from ..evaluation import training_items
        from ._model import ItemTower, UserModel
        from ._objectives import left_pad, windows

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

        return {"tower": self.tower.state_dict(), "user": self.user.state_dict(), "opt": self.opt.state_dict(),
                "encoder_states": self.encoder_states, "encoder_version": self.encoder_version,
                "phase": self.phase, "epoch": self.epoch, "stale": self.stale, "phase_best": self.phase_best,
                "elapsed": self.elapsed, "history": self.history, "best": self.best, "partial": self.partial_state, "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}

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

        from ._objectives import gather, left_pad

        vectors = self.item_vectors()
        self.user.eval()

        def score(histories: Sequence[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                idx = torch.from_numpy(left_pad(histories, self.cfg.max_history)).to(self.device)
                x, m = gather(vectors, idx)
                return (self.user.last(x, m) @ vectors.T).float().cpu().numpy()

        return score

    def validate(self) -> dict[str, Any]:
        from ..evaluation import evaluate

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
        from tqdm.auto import tqdm

        from ._objectives import augment, full_softmax_ce, gather, left_pad, nt_xent, pair_infonce

        cfg = self.cfg
        self.tower.train()
        self.user.train()
        order = self.rng.permutation(len(self.rows))
        n_items = self.split.n_items
        total = 0.0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {self.epoch + 1}", disable=not self.progress,
                   unit="batch", leave=False, file=sys.stderr)
        for start in bar:
            rows = self.rows[order[start:start + cfg.batch_size]]
            keep = None
            if cfg.residual_dropout > 0 and self.tower.residual is not None:
                keep = torch.from_numpy((self.rng.random(n_items) >= cfg.residual_dropout).astype(np.float32)).to(self.device)
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

    def run_user_phase(self, name: str, save: Callable[[], None]) -> None:
        cfg = self.cfg
        while self.epoch < cfg.epochs and self.stale < cfg.patience:
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
            self.log(f"{name} epoch {self.epoch}: loss {loss:.4f}, valid ndcg@10 {ndcg:.4f}"
                     f"{' (best)' if improved else ''}, {trained:.1f}s")
            if improved:
                self._snapshot(ndcg, name)
            if ndcg > self.phase_best:
                self.phase_best, self.stale = ndcg, 0
            else:
                self.stale += 1
            save()

    # -- the encoder phase ----------------------------------------------------------------------
    def run_encoder_phase(self, encoder: Any, save: Callable[[], None]) -> None:
        """Objective `next` (+ `cooc`): top encoder layers, item tower and user model trained jointly
        by InfoNCE over in-batch targets + popularity-sampled negatives, logQ-corrected."""
        import torch
        from tqdm.auto import tqdm

        from ._finetune import PartialEncoder
        from ._objectives import gather, left_pad, pair_infonce, sampled_softmax

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
        bar = tqdm(total=cfg.encoder_steps, initial=self.epoch, desc="encoder", disable=not self.progress,
                   unit="step", file=sys.stderr)
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
            negatives = self.rng.choice(self.split.n_items, size=cfg.negatives, p=q) if cfg.negatives else np.zeros(0, np.int64)
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
        self.log(f"encoder: {cfg.encoder_steps} steps of objective next{' + cooc' if 'cooc' in cfg.objectives else ''}, "
                 f"loss {running:.4f}; re-encoding the catalogue")
        self.tower.base.copy_(torch.from_numpy(partial.encode_all(progress=self.progress)).to(self.device))
        self.encoder_states["finetuned"] = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
        self.encoder_version = "finetuned"
        self.partial_state = None


def _save_checkpoint(path: Path, trainer: Trainer, meta: dict[str, Any]) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CHECKPOINT + ".tmp")
    buffer = io.BytesIO()
    torch.save({"meta": meta, "state": trainer.state_dict()}, buffer)
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path / CHECKPOINT)


def _load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    import torch

    file = path / CHECKPOINT
    if not file.is_file():
        raise LmrecError(f"--resume: no checkpoint at {file} (nothing to resume; run without --resume)")
    try:
        saved = torch.load(file, weights_only=False, map_location="cpu")
    except Exception as e:  # a torn or foreign file: say which, never a traceback
        raise LmrecError(f"--resume: checkpoint {file} cannot be read ({e})") from None
    for key in ("fingerprint", "split", "seed", "cold_share", "config"):
        if saved["meta"].get(key) != meta[key]:
            raise LmrecError(f"--resume: the checkpoint in {path} was made with another {key} "
                             f"({saved['meta'].get(key)!r} vs now {meta[key]!r}); run without --resume to start over")
    return saved["state"]


def _phases(cfg: TrainConfig) -> list[str]:
    return (["mlm"] if "mlm" in cfg.objectives else []) + ["user"] + (["encoder", "user2"] if "next" in cfg.objectives else [])


def train(data: str, out: str | Path, split: str = "warm", seed: int = 0, config: TrainConfig | None = None,
          device: str = "cpu", resume: bool = False, overwrite: bool = False, plot: str | Path | None = None,
          progress: bool = True, cold_share: float = 0.2, keep_checkpoints: bool = False,
          threads: int | None = None, force: bool = False, log: Callable[[str], None] = _log) -> TrainResult:
    """Train on the training part of `split` of `data` (a data spec) and write a bundle to `out`.

    `threads` sets torch's CPU threads (default: torch's choice); on a busy machine 1 can be much
    faster than an oversubscribed 2. `force` writes the bundle even if the export's parity gate
    fails (the breach is recorded); a failed gate keeps the checkpoint, so `resume` + `force`
    exports without training again."""
    require("torch", "train", "lmrec train")
    import torch

    from .. import load_dataset
    from ..evaluation import make_split
    from ._encoder import TorchEncoder, cached_item_vectors, resolve_model
    from ._finetune import mlm_warmup

    cfg = config or TrainConfig()
    if split not in ("warm", "cold"):
        raise LmrecError(f"--split {split!r}: expected warm or cold")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LmrecError(f"--seed {seed!r}: must be a non-negative integer")
    check_out(out, overwrite)
    if plot is not None:
        require("matplotlib", "train", "--plot")
    device = resolve_device(device)
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise LmrecError(f"--threads {threads!r}: must be a positive integer")
        torch.set_num_threads(threads)
    resolve_model(cfg.base_model)  # a missing folder fails now, not after loading the data
    started = time.perf_counter()
    dataset = load_dataset(data)
    for line in dataset.report.lines():
        log(f"data: {line}")
    if dataset.n_items < 2:
        raise DataError(f"--data {data}: {dataset.n_items} item(s); training needs at least 2")
    parts = make_split(dataset, split, seed, cold_share=cold_share)
    if len(parts.train) < MIN_TRAIN_USERS or sum(len(s) >= 2 for s in parts.train) < 1:
        raise DataError(f"--data {data}: {len(parts.train)} training sequence(s) with a next item in the {split} split; "
                        f"training needs users with at least 3 interactions (4 or more to learn a transition)")
    if len(parts.valid) == 0:
        raise DataError(f"--data {data}: no validation cases in the {split} split (nothing to early-stop on)")
    fingerprint = dataset.fingerprint()
    meta = {"fingerprint": fingerprint, "split": split, "seed": seed, "cold_share": cold_share, "config": cfg.to_dict()}
    log(f"{dataset.name}: {dataset.n_items} items, {len(parts.train)} training sequences, {len(parts.valid)} validation "
        f"cases, split {split}, seed {seed}, device {device}, objectives {','.join(cfg.objectives) or 'none'}")

    torch.manual_seed(seed)
    ckpt = checkpoint_dir(out)
    saved_state = _load_checkpoint(ckpt, meta) if resume else None
    if not resume and (ckpt / CHECKPOINT).is_file():
        log(f"a checkpoint exists in {ckpt}: starting over (pass --resume to continue it)")

    encoder = TorchEncoder(cfg.base_model, device=device, max_length=cfg.max_length)
    phases = _phases(cfg)
    mlm_done = saved_state is not None and ("mlm" in saved_state["encoder_states"])
    if "mlm" in phases and not mlm_done:
        mlm_warmup(encoder, dataset.item_texts, cfg.mlm_epochs, cfg.mlm_lr, cfg.mlm_probability, 32,
                   np.random.default_rng(seed), progress, log)
    elif mlm_done:
        encoder.model.load_state_dict(saved_state["encoder_states"]["mlm"])
    if "mlm" in phases:
        base = encoder.encode(dataset.item_texts, progress=progress)
    else:
        base = cached_item_vectors(dataset.item_texts, cfg.base_model, cfg.max_length, device=device, progress=progress)

    trainer = Trainer(dataset, parts, cfg, seed, device, progress, base, log)
    if "mlm" in phases and not mlm_done:
        trainer.encoder_states["mlm"] = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
        trainer.encoder_version = "mlm"
        trainer.phase = 1
    if saved_state is not None:
        trainer.load_state_dict(saved_state)
        if trainer.encoder_version == "finetuned":
            encoder.model.load_state_dict(trainer.encoder_states["finetuned"])
        where = f"phase {phases[trainer.phase]}, {trainer.epoch} done" if trainer.phase < len(phases) else "training done"
        log(f"resumed from {ckpt}: {where}")

    before = trainer.elapsed  # a resumed run counts the time of the runs it continues

    def save() -> None:
        trainer.elapsed = before + time.perf_counter() - started
        _save_checkpoint(ckpt, trainer, meta)

    if not trainer.history:
        trainer.validate_start()
    save()
    while trainer.phase < len(phases):
        name = phases[trainer.phase]
        if name in ("user", "user2"):
            trainer.run_user_phase(name, save)
        elif name == "encoder":
            trainer.run_encoder_phase(encoder, save)
        trainer.phase += 1
        trainer.epoch = trainer.stale = 0  # each phase early-stops on its own curve;
        trainer.phase_best = -1.0  # the global best decides which phase's model is kept
        save()
    trainer.restore_best()  # the tower's state holds the text vectors of the encoder it was trained on
    chosen = trainer.best["encoder_version"]
    if chosen != trainer.encoder_version:  # e.g. fine-tuning did not beat the frozen encoder on validation
        weights = (TorchEncoder(cfg.base_model, max_length=cfg.max_length).model.state_dict() if chosen == "base"
                   else trainer.encoder_states[chosen])
        encoder.model.load_state_dict(weights)
    encoder.model.to("cpu").eval()
    encoder.device = torch.device("cpu")
    trainer.tower.to("cpu")
    trainer.user.to("cpu")
    trainer.device = torch.device("cpu")
    valid = trainer.validate()
    seconds = before + time.perf_counter() - started
    log(f"best: phase {trainer.best['phase']} epoch {trainer.best['epoch']}, valid ndcg@10 {valid['ndcg@10']:.4f} "
        f"({seconds / 60:.1f} min)")
    if plot is not None:
        plot_history(trainer.history, plot, f"{dataset.name} · {split} · seed {seed}")

    bundle = _export(trainer, encoder, data, out, overwrite, force, cfg, meta, valid, chosen, seconds, device)
    if not keep_checkpoints:
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    return TrainResult(bundle, trainer.history, valid, seconds)


def _export(trainer: Trainer, encoder: Any, data: str, out: str | Path, overwrite: bool, force: bool, cfg: TrainConfig,
            meta: dict[str, Any], valid: dict[str, Any], chosen: str, seconds: float, device: str) -> Path:
    from ._model import export_user_encoder
    from .export import ParityError, TrainedParts, build_zero_shot_bundle

    affine = trainer.tower.affine()
    residuals = trainer.tower.residuals()
    epochs = [h for h in trainer.history if h["phase"] in ("user", "user2")]
    training = {
        "data": {"spec": data, "name": trainer.data.name, "fingerprint": meta["fingerprint"]},
        "split": meta["split"],
        "seed": meta["seed"],
        "cold_share": meta["cold_share"],
        "split_info": trainer.split.describe(),
        "config": meta["config"],
        "objectives": list(cfg.objectives),
        "encoder": {"base": "base model, frozen", "mlm": "MLM warm-up", "finetuned":
                    f"top {cfg.finetune_layers} layer(s) fine-tuned"}[chosen],
        "best": {"phase": trainer.best["phase"], "epoch": trainer.best["epoch"], "valid_ndcg@10": valid["ndcg@10"]},
        "history": trainer.history,
        "seconds": round(seconds, 1),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in epochs])) if epochs else None,
        "device": device,
        "items_with_residual": int(trainer.seen.sum()) if residuals is not None else 0,
        "lmrec_version": __version__,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="lmrec-train-") as tmp:
        user_path = Path(tmp) / "user_encoder.onnx"
        export_user_encoder(trainer.user, trainer.tower.dim, str(user_path))
        _check_user_encoder(trainer, user_path)
        parts = TrainedParts(
            encoder=encoder,
            adapter=None if affine is None else (affine[0].numpy(), affine[1].numpy()),
            residuals=None if residuals is None else residuals.numpy(),
            user_encoder=user_path,
            fingerprint=meta["fingerprint"],
            popularity=trainer.counts,
            manifest={"kind": "trained", "training": training, "metrics": {"valid": valid},
                      "user_model": {"file": "user_encoder.onnx", "max_history": cfg.max_history,
                                     "inputs": {"history": "(batch, max_history, dim) float32, left-padded, most recent last",
                                                "mask": "(batch, max_history) float32, 1 for items"},
                                     "output": "user_vector (batch, dim); score = user_vector · item_vector",
                                     "hidden": cfg.hidden, "layers": cfg.layers, "heads": cfg.heads}},
        )
        try:
            return build_zero_shot_bundle(data, out, base_model=cfg.base_model, overwrite=overwrite, force=force,
                                          max_length=cfg.max_length, seed=meta["seed"], trained=parts)
        except ParityError as e:
            raise ParityError(f"{e}; the trained model is kept in {checkpoint_dir(out)}: add --resume --force "
                              "to export it without training again") from None


def _check_user_encoder(trainer: Trainer, path: Path, cases: int = 64) -> None:
    """The ONNX user model must give the torch model's user vectors (before it goes in a bundle)."""
    import onnxruntime as ort
    import torch

    from ._objectives import gather, left_pad

    histories = trainer.split.valid.histories[:cases]
    vectors = trainer.item_vectors()
    idx = torch.from_numpy(left_pad(histories, trainer.cfg.max_history))
    x, m = gather(vectors, idx)
    with torch.no_grad():
        expected = trainer.user.eval().last(x, m).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"history": x.numpy().astype(np.float32), "mask": m.numpy().astype(np.float32)})[0]
    err = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-9))
    if not np.isfinite(got).all() or err > 1e-3:
        raise LmrecError(f"user_encoder.onnx disagrees with the trained model (relative error {err:.2e})")


def plot_history(history: list[dict[str, Any]], path: str | Path, title: str) -> None:
    """Validation NDCG@10 per epoch, one line per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = -1 if history and history[0]["phase"] == "start" else 0  # the untrained model is epoch 0
    for phase in dict.fromkeys(h["phase"] for h in history):
        rows = [h for h in history if h["phase"] == phase]
        xs = list(range(x + 1, x + len(rows) + 1))
        ax.plot(xs, [h["valid_ndcg@10"] for h in rows], marker="o", ms=3, label=phase)
        x = xs[-1] if xs else x
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
