"""`lmrec.trainer.train`: self-supervised training on a split's training part, exported as a bundle.

Stages, each chosen on validation NDCG@10 (the test cases are never looked at):
1. `mlm` (optional) — masked-LM warm-up of the encoder on the item texts;
2. `text` — the encoder's top layers learn item co-occurrence through text alone
   (_text_finetune.py); kept only if it beats the base encoder on validation;
3. `user` — over the (fine-tuned) text vectors, the item tower (adapter + residuals, borrowed by
   items without one) and the user model train with full-softmax cross-entropy (+ `cl`, `cooc`).
   Without a config file, a few settings are searched by successive halving (_autotune.py);
4. `next` (optional) — the encoder's top layers fine-tune with sampled InfoNCE, then `user2`.
Each phase early-stops on its own curve and the best model of any phase, or the untrained one, is
kept. Then the serving settings are chosen on validation (Trainer.calibrate): the weight of the
last items in the user vector and, on a split with new items (cold, mixed: validation is every
user's next item), the new-item bonus (new items may cost warm targets at most 3 %, and should rank
as well as under the untrained encoder), then the weight of the text term (the fine-tuned encoder's
similarity to the user's last item, beside the user model's score). `--budget` bounds the time;
checkpoints make `resume` continue an interrupted run (a search is replayed: it is deterministic),
and a failed export keeps the trained model.
"""

from __future__ import annotations

import datetime
import functools
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import BundleWriter, DataError, LmrecError, Manifest, __version__, require

from ._budget import DEFAULT_BUDGET, TEST_LIKE_SHARE, TEXT_SHARE, TRAIN_SHARE
from ._checkpoint import CHECKPOINT, checkpoint_dir, load_checkpoint, load_stage, save_checkpoint, save_stage
from ._config import TEST_LIKE_ORIGINS, TrainConfig
from ._trainer import Trainer, log_line, sample_pool

MIN_TRAIN_USERS = 2
TRAIN_SPLITS = ("warm", "cold", "mixed")


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
    return ["user"] + (["encoder", "user2"] if "next" in cfg.objectives else [])


def _last_item_ndcg(vectors: np.ndarray, cases: Any, n_items: int, mask: np.ndarray | None = None) -> float:
    """Validation NDCG@10 of the untrained user (the most recent item's vector) over `vectors`."""
    from lmrec.evaluation import evaluate

    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    values = evaluate(lambda hs: v[[h[-1] for h in hs]] @ v.T, cases, n_items).values["ndcg@10"]
    return float(values.mean() if mask is None else values[mask].mean())


def _check_args(split: str, seed: Any, threads: Any, budget: Any) -> None:
    if split not in TRAIN_SPLITS:
        raise LmrecError(f"--split {split!r}: expected {', '.join(TRAIN_SPLITS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LmrecError(f"--seed {seed!r}: must be a non-negative integer")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise LmrecError(f"--threads {threads!r}: must be a positive integer")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise LmrecError(f"--budget {budget!r}: must be a positive number of minutes")


def train(data: str, out: str | Path, split: str = "warm", seed: int = 0, config: TrainConfig | None = None,
          device: str = "cpu", resume: bool = False, overwrite: bool = False, plot: str | Path | None = None,
          progress: bool = True, cold_share: float = 0.2, keep_checkpoints: bool = False,
          threads: int | None = None, force: bool = False, strict_parity: bool = False,
          search: bool | None = None, fixed: Collection[str] | None = None,
          budget: float | None = DEFAULT_BUDGET,
          log: Callable[[str], None] = log_line) -> TrainResult:
    """Train on the training part of `split` of `data` (a data spec) and write a bundle to `out`.

    `search` (default: when no `config` is given) chooses the user-model settings on validation,
    leaving the fields named in `fixed` as `config` has them; searched or not, the defaults
    follow the split (no `cl` + `cooc` where it holds new items) unless `fixed` names them
    (default: every field of a given `config`, none without one). `budget` (minutes) bounds the
    training: objective `text` stops at 50 % of it, the user phases at 85 % (each keeping its
    best so far) and the test-like validation at 90 % (skipped when it cannot end by then); the
    export runs after. `threads` sets torch's CPU threads and the export's ONNX Runtime and index
    build threads (on a busy machine 1 can be much faster than an oversubscribed 2). A quantised encoder that
    misses its parity gate is recorded and never chosen by precision="auto"; `strict_parity` makes that an error,
    and `force` writes even an fp32 graph that fails. A failed export keeps the checkpoint, so
    `resume` exports without training again."""
    require("torch", "train", "lmrec train")
    import torch
    from lmrec import load_dataset
    from lmrec.evaluation import HELD_OUT, make_split

    from ._encoder import TorchEncoder, cached_item_vectors, resolve_model, set_torch_threads
    from ._finetune import mlm_warmup

    search = config is None if search is None else search
    if fixed is None:
        fixed = () if config is None else [f.name for f in fields(TrainConfig)]
    cfg = config or TrainConfig()
    _check_args(split, seed, threads, budget)
    BundleWriter.check_target(out, overwrite)  # before any work
    if plot is not None:
        require("matplotlib", "train", "--plot")
    device = resolve_device(device)
    if threads is not None:
        set_torch_threads(threads)
    resolve_model(cfg.base_model)  # a missing folder fails now, not after loading the data
    started = time.perf_counter()
    clock = time.monotonic()
    dataset = load_dataset(data)
    for line in dataset.report.lines():
        log(f"data: {line}")
    if dataset.n_items < 2:
        raise DataError(f"--data {data}: {dataset.n_items} item(s); training needs at least 2")
    # cold and mixed train alike: the cold split's training part, validated on every user's next item
    parts = make_split(dataset, "mixed" if split in HELD_OUT else split, seed, cold_share=cold_share)
    if len(parts.train) < MIN_TRAIN_USERS or sum(len(s) >= 2 for s in parts.train) < 1:
        raise DataError(
            f"--data {data}: {len(parts.train)} training sequence(s) with a next item in the {split} split; "
            f"training needs users with at least 3 interactions (4 or more to learn a transition)"
        )
    if len(parts.valid) == 0:
        raise DataError(f"--data {data}: no validation cases in the {split} split (nothing to early-stop on)")
    fingerprint = dataset.fingerprint()
    meta = {"fingerprint": fingerprint, "split": split, "seed": seed, "cold_share": cold_share,
            "config": cfg.to_dict(), "search": search, "fixed": sorted(fixed) if search else []}
    log(
        f"{dataset.name}: {dataset.n_items} items, {len(parts.train)} training sequences, "
        f"{len(parts.valid)} validation cases, split {split}, seed {seed}, device {device}, "
        f"objectives {','.join(cfg.objectives) or 'none'}, budget {f'{budget:g} min' if budget else 'none'}"
    )

    torch.manual_seed(seed)
    ckpt = checkpoint_dir(out)
    saved = load_checkpoint(ckpt, meta) if resume else None
    prior = 0.0  # seconds the runs this one resumes spent: they count toward --budget and the run's seconds
    if saved is not None:
        started, clock, prior = _count_earlier(saved["state"]["elapsed"], started, clock, prior)
    if saved is not None and budget:
        log(f"resumed: {saved['state']['elapsed'] / 60:.1f} min of the {budget:g}-min --budget spent before")
    deadline = (lambda share: None) if budget is None else (lambda share: clock + share * budget * 60)
    if not resume and ckpt.is_dir():
        if (ckpt / CHECKPOINT).is_file():
            log(f"a checkpoint exists in {ckpt}: starting over (pass --resume to continue it)")
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)

    encoder = TorchEncoder(cfg.base_model, device=device, max_length=cfg.max_length)

    @functools.cache
    def base_vectors() -> np.ndarray:
        """The untrained encoder's catalogue vectors, a pass over the catalogue made only where they
        are needed (new targets to measure, or no encoder stage kept): a first run on the warm split
        skips it. Catalogue-sized passes get a line each: on 50 k items they take most of a run."""
        pass_started = time.perf_counter()
        base = cached_item_vectors(dataset.item_texts, cfg.base_model, cfg.max_length, device=device,
                                   progress=progress)
        log(f"base vectors: {len(base)} items in {time.perf_counter() - pass_started:.0f}s (cached for later runs)")
        return base

    new_items = parts.new_targets(parts.valid)
    floor = _last_item_ndcg(base_vectors(), parts.valid, parts.n_items, new_items) if new_items.any() else None
    encoder_states: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    if "mlm" in cfg.objectives:
        stage = load_stage(ckpt, "mlm", meta) if resume else None
        if stage is None:
            mlm_warmup(encoder, dataset.item_texts, cfg.mlm_epochs, cfg.mlm_lr, cfg.mlm_probability, 32,
                       np.random.default_rng(seed), progress, log)
            stage = {"state": {k: v.detach().clone() for k, v in encoder.model.state_dict().items()},
                     "elapsed": time.perf_counter() - started}
            save_stage(ckpt, "mlm", meta, stage)
        else:
            started, clock, prior = _count_earlier(stage.get("elapsed", 0.0), started, clock, prior)
        encoder.model.load_state_dict(stage["state"])
        encoder_states["mlm"] = stage["state"]
        vectors, version = encoder.encode(dataset.item_texts, progress=progress), "mlm"
    else:
        vectors, version = None, "base"
    if "text" in cfg.objectives and cfg.text_epochs > 0:
        stage = load_stage(ckpt, "text", meta) if resume else None
        if stage is None:
            from ._text_finetune import finetune_text

            result = finetune_text(encoder, dataset.item_texts, parts.train, _seen(parts), cfg,
                                   lambda v: _last_item_ndcg(v, parts.valid, parts.n_items), seed, progress, log,
                                   deadline(TEXT_SHARE), spill_dir=ckpt)
            # the user model trains on what the exported encoder will output: whole texts, every layer
            pass_started = time.perf_counter()
            full = encoder.encode(dataset.item_texts, progress=progress) if result.state is not None else None
            if full is not None:
                took = time.perf_counter() - pass_started
                log(f"text: {len(full)} items re-encoded by the fine-tuned encoder in {took:.0f}s")
            if floor is not None:  # the stage chooses on every target; say what it did to new ones
                kept = _last_item_ndcg(full, parts.valid, parts.n_items, new_items) if full is not None else floor
                result.report["new_targets"] = {"cases": int(new_items.sum()),
                                                "valid_ndcg@10": {"base": floor, "fine_tuned": kept}}
                log(f"text: new-target validation cases ({int(new_items.sum())}), last item, whole texts: "
                    f"valid ndcg@10 {floor:.4f} (base) -> {kept:.4f}")
            stage = {"state": result.state, "vectors": full, "report": result.report,
                     "elapsed": time.perf_counter() - started}
            save_stage(ckpt, "text", meta, stage)
        else:
            started, clock, prior = _count_earlier(stage.get("elapsed", 0.0), started, clock, prior)
        reports["text"] = stage["report"]
        if cfg.text_temperature is None:  # the stage chose it: the manifest's config says which
            cfg = cfg.with_(text_temperature=stage["report"]["temperature"])
        if stage["state"] is not None:
            encoder.model.load_state_dict(stage["state"])
            encoder_states["text"] = stage["state"]
            vectors, version = stage["vectors"], "text"
    if vectors is None:
        vectors = base_vectors()

    if saved is None and prior and budget:
        log(f"resumed: {prior / 60:.1f} min of the {budget:g}-min --budget spent before (in the stages kept)")
    spent = deadline(TRAIN_SHARE)
    spent_before = saved is None and spent is not None and time.monotonic() >= spent  # before any user epoch
    if spent_before:
        log(f"warning: the passes over the catalogue took {(time.monotonic() - clock) / 60:.1f} min of the "
            f"{budget:g}-min --budget: no search, the user model trains one epoch; "
            "raise --budget for a catalogue this size")

    pool = sample_pool(_seen(parts), cfg.softmax_items)
    if pool is not None:
        log(f"user model: each step's softmax over the batch's targets and {cfg.softmax_items} of the "
            f"{len(pool)} training items, sampled (softmax_items)")

    def make(c: TrainConfig) -> Trainer:
        t = Trainer(dataset, parts, c, seed, device, progress, vectors, log)
        t.encoder_version = version
        return t

    phases = _phases(cfg)
    if saved is not None:
        trainer = make(TrainConfig(**saved["config"]))
        trainer.load_state_dict(saved["state"])
        reports.update(saved["reports"])
        where = f"phase {phases[trainer.phase]}, {trainer.epoch} done" if trainer.phase < len(phases) else "done"
        log(f"resumed from {ckpt}: {where}")
    elif search:
        from ._autotune import candidates, choose, rungs_cost

        configs = candidates(cfg, parts.train, fixed, bool(new_items.any()), log)
        if spent_before:
            configs = configs[:1]  # an epoch per candidate would overrun a spent budget by as many epochs
        log(f"search: {len(configs)} candidate(s), about {rungs_cost(len(configs))} epochs before the winner's own")
        trainers = [make(c) for c in configs]
        untrained = trainers[0].validate_start()
        for t in trainers[1:]:
            t.validate_start(untrained)
        trainer, reports["search"] = choose(trainers, deadline(TRAIN_SHARE), log, lambda: None)
        if spent_before:
            reports["search"]["skipped"] = "the passes over the catalogue spent the --budget"
        trainer.phase = 1  # the search ran the winner's user phase to its end (or to the budget)
        del trainers
    else:
        from ._autotune import for_split

        trainer = make(for_split(cfg, fixed, bool(new_items.any()), log))
        trainer.validate_start()
    cfg = trainer.cfg

    def save() -> None:
        trainer.elapsed = time.perf_counter() - started  # with the time of the runs it continues
        save_checkpoint(ckpt, trainer, meta, {"config": cfg.to_dict(), "reports": reports})

    save()
    stop = deadline(TRAIN_SHARE)
    while trainer.phase < len(phases):
        name = phases[trainer.phase]
        if name in ("user", "user2"):
            trainer.run_user_phase(name, save, stop)
            if not trainer.phase_done:
                reports.setdefault("phases_cut", []).append(name)
        elif name == "encoder":
            trainer.run_encoder_phase(encoder, save)
        trainer.phase += 1
        trainer.epoch = trainer.stale = 0  # each phase early-stops on its own curve;
        trainer.phase_best = -1.0  # the global best decides which phase's model is kept
        save()
    trainer.restore_best()  # the tower's state holds the text vectors of the encoder it was trained on
    chosen = trainer.best["encoder_version"]
    weights = (TorchEncoder(cfg.base_model, max_length=cfg.max_length).model.state_dict() if chosen == "base"
               else trainer.encoder_states.get(chosen) or encoder_states[chosen])
    encoder.model.load_state_dict(weights)
    encoder.weights = ENCODER_KINDS[chosen].format(layers=cfg.finetune_layers)
    encoder.model.to("cpu").eval()
    encoder.device = torch.device("cpu")
    trainer.tower.to("cpu")
    trainer.user.to("cpu")
    trainer.device = torch.device("cpu")
    if trainer.tower.borrow is not None:
        trainer.tower.borrow = trainer.tower.borrow.cpu()
    reports["budget"] = _budget_report(budget, reports, log)
    reports.update(trainer.calibrate(floor))
    known = reports.get("text_term", {}).get("test_like")  # a resumed export: it ran before
    readings: list[dict[str, Any]] = []
    if known is None and (trainer.cfg.text_weight is None or len(trainer.centred_grid()) > 1):  # a grid to judge
        origins = cfg.test_like_origins or (TEST_LIKE_ORIGINS if new_items.any() else 1)
        for drop in range(1, origins + 1):
            probe = _test_like(trainer, dataset, split, seed, cold_share, base_vectors, device, progress, log,
                               deadline(TEST_LIKE_SHARE), reports["budget"]["cut"], drop)
            if probe is None:
                break
            readings.append(trainer.read_test_like(*probe))  # read now: one probe in memory at a time
    reports["text_term"], reports["new_items"] = trainer.calibrate_text(floor, readings, known)
    save()  # with the test-like validation's grid: --resume after a failed export does not train it again
    valid = trainer.validate()
    pieces = trainer.pieces_report(valid)
    if pieces is not None:  # what the manifest's new-item settings cost and buy together
        reports["new_items"] = {**reports["new_items"], "validation": pieces}
    seconds = time.perf_counter() - started
    log(f"best: phase {trainer.best['phase']} epoch {trainer.best['epoch']}, valid ndcg@10 {valid['ndcg@10']:.4f} "
        f"({seconds / 60:.1f} min)")
    if plot is not None:
        plot_history(trainer.history, plot, f"{dataset.name} · {split} · seed {seed}")

    bundle = _export(trainer, encoder, data, out, overwrite, (force, strict_parity), cfg, meta, valid, chosen,
                     seconds, device, reports, threads)
    if not keep_checkpoints:
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    return TrainResult(bundle, trainer.history, valid, seconds)


def _test_like(trainer: Trainer, dataset: Any, split: str, seed: int, cold_share: float,
               base: Callable[[], np.ndarray], device: str, progress: bool, log: Callable[[str], None],
               stop: float | None, cut: list[str], drop: int = 1) -> tuple[Trainer, float | None] | None:
    """A validation that looks like test, for the weight between the fitted model and the text:
    the kept model's settings and text vectors, its user phase trained again on the split
    without each user's last `drop` interactions, whose test cases are the targets one step
    beyond a history item its training never saw, as test is to the model shipped (each further
    `drop` another such sample, one step earlier: `cfg.test_like_origins`). Validation
    right after the training data overrates what training fits: every fitted model loses from
    validation to test while the encoder's text similarity gains, so a weight chosen on validation
    leans to the fitted side (bench/RESULTS.md, "The encoder's similarity in the served score").
    It trains as many epochs as the kept model's user phase took to its best, so its length
    depends on the seed, not on the clock: it is skipped (and `cut` names it) when the epochs the
    kept model took, at the speed they ran, would not end before `stop`.
    Returns (the trainer, the untrained encoder's NDCG@10 on its validation's new targets, from
    `base()`'s vectors, asked for only when there are any), or None when the budget or the data
    leave no room for it."""
    from lmrec.evaluation import HELD_OUT, make_split

    shorter = f"{drop} interaction{'s' if drop > 1 else ''} shorter"
    parts = make_split(dataset, "mixed" if split in HELD_OUT else split, seed, cold_share=cold_share,
                       drop_last=drop)
    if len(parts.train) < MIN_TRAIN_USERS or not len(parts.valid) or not len(parts.test):
        log(f"test-like validation skipped: too few users keep a next item {shorter}")
        return None
    epochs, needed = trainer.peak_epochs()
    left = None if stop is None else stop - time.monotonic()
    if left is not None and left < needed:
        if "test_like" not in cut:
            cut.append("test_like")
        fallback = "validation" if drop == 1 else f"the first {drop - 1} test-like validation(s)"
        log(f"warning: test-like validation skipped: its {epochs} epoch(s) take about {needed / 60:.1f} min, "
            f"{max(left, 0.0) / 60:.1f} min of the --budget are left; the text term's weight is chosen on "
            f"{fallback} and may not reproduce: a larger --budget (0: none) lets it run")
        return None
    started = time.perf_counter()
    probe = Trainer(dataset, parts, trainer.cfg.with_(epochs=epochs), seed, device, progress,
                    trainer.tower.base.cpu().numpy(), log)
    probe.label = "test-like "
    probe.validate_start()
    probe.run_user_phase("user", lambda: None, stop)
    probe.restore_best()
    if not probe.phase_done:  # the clock stopped it: the estimate missed
        if "test_like" not in cut:
            cut.append("test_like")
        log("warning: the --budget cut the test-like validation short; the text term's weight may not "
            "reproduce: a larger --budget (0: none) lets it end on its own")
    new = parts.new_targets(parts.valid)
    floor = _last_item_ndcg(base(), parts.valid, parts.n_items, new) if new.any() else None
    log(f"test-like validation: a user phase of {probe.epoch} epoch(s) on the split {shorter}, "
        f"{time.perf_counter() - started:.0f}s")
    return probe, floor


def _budget_report(budget: float | None, reports: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """What the clock cut short (`training.budget`): a stage that ends on its own (epochs, patience)
    is deterministic for a seed; one the --budget stops is not, since where it stops depends on
    the host's speed and load, so the log says so."""
    cut = [stage for stage, hit in (("text", reports.get("text", {}).get("stopped") == "budget"),
                                    ("search", bool(reports.get("search", {}).get("stopped_by_budget"))))
           if hit] + reports.pop("phases_cut", [])
    if cut:
        log(f"warning: the {budget:g}-min --budget cut {', '.join(cut)} short (each kept its best so far); where "
            "the clock stops a stage varies with the host's speed and load, so this run may not reproduce: "
            "a larger --budget (0: none) lets every stage end on its own")
    return {"minutes": budget, "cut": cut}


def _count_earlier(elapsed: float, started: float, clock: float, prior: float) -> tuple[float, float, float]:
    """(started, clock, prior) moved back by what the runs a resumed checkpoint or stage saw spent
    (`elapsed`, older stage files have none) beyond `prior`, the time already counted: it counts
    toward the --budget and the run's seconds as if it ran in this process."""
    extra = max(0.0, float(elapsed) - prior)
    return started - extra, clock - extra, prior + extra


def _seen(parts: Any) -> np.ndarray:
    from lmrec.evaluation import training_items

    return training_items(parts)


ENCODER_KINDS = {"base": "base model, frozen", "mlm": "MLM warm-up",
                 "text": "top {layers} layer(s) fine-tuned on item co-occurrence through text (objective text)",
                 "finetuned": "top {layers} layer(s) fine-tuned on next items (objective next)"}


def _export(trainer: Trainer, encoder: Any, data: str, out: str | Path, overwrite: bool, gate: tuple[bool, bool],
            cfg: TrainConfig, meta: dict[str, Any], valid: dict[str, Any], chosen: str, seconds: float, device: str,
            reports: dict[str, Any], threads: int | None) -> Path:
    from dataclasses import replace

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
        "config": cfg.to_dict(),
        "searched": bool(meta["search"]),
        "objectives": list(cfg.objectives),
        "encoder": ENCODER_KINDS[chosen].format(layers=cfg.finetune_layers),
        "encoder_fine_tuned": chosen in ("text", "finetuned"),
        **reports,
        # the model kept, at its own validation; metrics.valid is the served one's (calibrated after)
        "best": {"phase": trainer.best["phase"], "epoch": trainer.best["epoch"],
                 "valid_ndcg@10": float(trainer.best["valid"])},
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
                max_history=cfg.max_history, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                recent_items=cfg.recent_items, recent_weight=trainer.recent_weight,
                text_items=cfg.text_items, text_weight=trainer.text_weight,
                centred_text_weight=trainer.centred_weight,
            ),
            fingerprint=meta["fingerprint"],
            training=training,
            metrics={"valid": valid},
            popularity=trainer.counts,
            seen=trainer.seen,
            new_items=None if trainer.new_items is None else replace(trainer.new_items, bonus=trainer.bonus),
            text_vectors=trainer.tower.base.numpy(),  # restored with the best model: its encoder's vectors
        )
        try:
            return build_zero_shot_bundle(data, out, base_model=cfg.base_model, overwrite=overwrite, force=gate[0],
                                          strict_parity=gate[1], max_length=cfg.max_length, seed=meta["seed"],
                                          trained=parts, threads=threads)
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
