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

import datetime
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import BundleWriter, DataError, LmrecError, Manifest, __version__, require

from ._checkpoint import CHECKPOINT, checkpoint_dir, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._trainer import Trainer, log_line

MIN_TRAIN_USERS = 2


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
        raise LmrecError(
            "--device cuda: PyTorch sees no CUDA device (this torch build or host has none); use --device cpu"
        )
    return device


def _phases(cfg: TrainConfig) -> list[str]:
    return (
        (["mlm"] if "mlm" in cfg.objectives else [])
        + ["user"]
        + (["encoder", "user2"] if "next" in cfg.objectives else [])
    )


def train(data: str, out: str | Path, split: str = "warm", seed: int = 0, config: TrainConfig | None = None,
          device: str = "cpu", resume: bool = False, overwrite: bool = False, plot: str | Path | None = None,
          progress: bool = True, cold_share: float = 0.2, keep_checkpoints: bool = False,
          threads: int | None = None, force: bool = False, strict_parity: bool = False,
          log: Callable[[str], None] = log_line) -> TrainResult:
    """Train on the training part of `split` of `data` (a data spec) and write a bundle to `out`.

    `threads` sets torch's CPU threads (default: torch's choice); on a busy machine 1 can be much
    faster than an oversubscribed 2. A quantised encoder that misses its parity gate is recorded
    and never chosen by precision="auto"; `strict_parity` makes that an error, and `force` writes
    even an fp32 graph that fails. A failed export keeps the checkpoint, so `resume` exports
    without training again."""
    require("torch", "train", "lmrec train")
    import torch
    from lmrec import load_dataset
    from lmrec.evaluation import make_split

    from ._encoder import TorchEncoder, cached_item_vectors, resolve_model
    from ._finetune import mlm_warmup

    cfg = config or TrainConfig()
    if split not in ("warm", "cold"):
        raise LmrecError(f"--split {split!r}: expected warm or cold")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LmrecError(f"--seed {seed!r}: must be a non-negative integer")
    BundleWriter.check_target(out, overwrite)  # before any work
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
        raise DataError(
            f"--data {data}: {len(parts.train)} training sequence(s) with a next item in the {split} split; "
            f"training needs users with at least 3 interactions (4 or more to learn a transition)"
        )
    if len(parts.valid) == 0:
        raise DataError(f"--data {data}: no validation cases in the {split} split (nothing to early-stop on)")
    fingerprint = dataset.fingerprint()
    meta = {"fingerprint": fingerprint, "split": split, "seed": seed, "cold_share": cold_share, "config": cfg.to_dict()}
    log(
        f"{dataset.name}: {dataset.n_items} items, {len(parts.train)} training sequences, "
        f"{len(parts.valid)} validation "
        f"cases, split {split}, seed {seed}, device {device}, objectives {','.join(cfg.objectives) or 'none'}"
    )

    torch.manual_seed(seed)
    ckpt = checkpoint_dir(out)
    saved_state = load_checkpoint(ckpt, meta) if resume else None
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
        where = (
            f"phase {phases[trainer.phase]}, {trainer.epoch} done" if trainer.phase < len(phases) else "training done"
        )
        log(f"resumed from {ckpt}: {where}")

    before = trainer.elapsed  # a resumed run counts the time of the runs it continues

    def save() -> None:
        trainer.elapsed = before + time.perf_counter() - started
        save_checkpoint(ckpt, trainer, meta)

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

    bundle = _export(trainer, encoder, data, out, overwrite, (force, strict_parity), cfg, meta, valid, chosen,
                     seconds, device)
    if not keep_checkpoints:
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    return TrainResult(bundle, trainer.history, valid, seconds)


def _export(trainer: Trainer, encoder: Any, data: str, out: str | Path, overwrite: bool, gate: tuple[bool, bool],
            cfg: TrainConfig,
            meta: dict[str, Any], valid: dict[str, Any], chosen: str, seconds: float, device: str) -> Path:
    from lmrec import UserModelInfo

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
        user_path = Path(tmp) / Manifest.USER_ENCODER
        export_user_encoder(trainer.user, trainer.tower.dim, str(user_path))
        _check_user_encoder(trainer, user_path)
        parts = TrainedParts(
            encoder=encoder,
            adapter=None if affine is None else (affine[0].numpy(), affine[1].numpy()),
            residuals=None if residuals is None else residuals.numpy(),
            user_encoder=user_path,
            user_model=UserModelInfo(
                max_history=cfg.max_history, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads
            ),
            fingerprint=meta["fingerprint"],
            training=training,
            metrics={"valid": valid},
            popularity=trainer.counts,
        )
        try:
            return build_zero_shot_bundle(data, out, base_model=cfg.base_model, overwrite=overwrite, force=gate[0],
                                          strict_parity=gate[1], max_length=cfg.max_length, seed=meta["seed"],
                                          trained=parts)
        except ParityError as e:
            raise ParityError(f"{e}; the trained model is kept in {checkpoint_dir(out)}: add --resume to export it "
                              "without training again") from None


def _check_user_encoder(trainer: Trainer, path: Path, cases: int = 64) -> None:
    """The ONNX user model must give the torch model's user vectors (before it goes in a bundle)."""
    import torch
    from lmrec import open_session

    from .objectives import gather, left_pad

    histories = trainer.split.valid.histories[:cases]
    vectors = trainer.item_vectors()
    idx = torch.from_numpy(left_pad(histories, trainer.cfg.max_history))
    x, m = gather(vectors, idx)
    with torch.no_grad():
        expected = trainer.user.eval().last(x, m).numpy()
    session = open_session(path, "cpu")
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
