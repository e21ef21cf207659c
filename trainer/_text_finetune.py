"""Objective `text`: the encoder learns from the logs, through text alone.

An item's text must predict the items next to it in training sequences: the top layers of the
encoder (over cached hidden states, `PartialEncoder`) map an anchor item's text to a vector whose
softmax over a memory bank of the whole catalogue matches the anchor's co-occurrence
distribution. The item tower is text only (no residual, no adapter), so everything learnt lands
in the encoder and reaches items that have no interactions; that is what an adapter or residual
cannot do (bench/RESULTS.md, "The language model learns"). The bank holds every item's current
vector: the anchors' rows are rewritten after each step and the whole bank is re-encoded once per
epoch, so a step runs only its anchors through trainable layers (BLaIR and Recformer train item
text against neighbours the same way, with in-batch negatives instead of the bank).

Token dropout on the cached states is the augmentation; bf16 autocast where the hardware has it;
the states hold the texts as served (`text_max_length` null: `max_length` tokens), so the stage trains
and picks its epoch on the vectors the export serves. A cut at 64 tokens (titles fit) halves a
step's cost on long texts but costs their new items (Office: 1.20x zero-shot with whole texts, 1.12x
cut, bench/RESULTS.md "Whole texts by default"). Each
second epoch is validated by scoring with the most recent history item (the untrained user model),
on the split's validation cases; the best epoch, or the base encoder, is kept. The softmax's
temperature is chosen the same way unless fixed: each candidate runs a few epochs, the best goes on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ._config import TEXT_TEMPERATURES, TrainConfig
from ._finetune import PartialEncoder

VALIDATE_EVERY = 2  # epochs between validations (a validation re-encodes the catalogue)
TEXT_PATIENCE = 3  # validations without a new best before the stage stops
CHOOSE_AFTER = 2 * VALIDATE_EVERY  # epochs each of TEXT_TEMPERATURES runs before the best goes on alone


@dataclass
class TextFinetuneResult:
    """What the stage kept: the full encoder state (None: the base encoder won) and its vectors
    (as the stage saw them: from the cached, shortened states)."""

    state: dict[str, Any] | None
    vectors: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def cooccurrence(train: list[np.ndarray], n_items: int) -> Any:
    """Sparse (n, n) counts of b right before or after a in a training sequence (no self pairs)."""
    import scipy.sparse as sp

    pairs = [np.stack([s[:-1], s[1:]]) for s in train if len(s) > 1]
    if not pairs:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    a, b = np.concatenate(pairs, axis=1)
    rows, cols = np.concatenate([a, b]), np.concatenate([b, a])
    keep = rows != cols
    counts = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n_items, n_items))
    counts.sum_duplicates()
    return counts


def bf16_autocast(device: torch.device) -> bool:
    """bf16 where it is native (CUDA, or a CPU with AVX-512 BF16 / AMX); elsewhere it is emulated and slow."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(native()) if native is not None else False


class _Run:
    """One temperature's course through the stage: the weights, optimiser, random streams and
    memory bank it owns, so that two runs can take turns on the encoder's shared top layers and
    each follows exactly the path it would follow alone."""

    def __init__(self, temperature: float, partial: PartialEncoder, cfg: TrainConfig, seed: int,
                 torch_rng: torch.Tensor, vectors: np.ndarray, base_valid: float) -> None:
        self.temperature = temperature
        self.top = copy.deepcopy(partial.top.state_dict())
        self.opt = torch.optim.AdamW(list(partial.top.parameters()), lr=cfg.text_lr, weight_decay=0.0)
        self.rng, self.torch_rng = np.random.default_rng(seed), torch_rng.clone()
        self.bank = torch.from_numpy(vectors.copy()).to(partial.encoder.device)  # rows are rewritten in place
        self.best_valid, self.best_epoch, self.best_vectors = base_valid, 0, vectors
        self.peak: float | None = None  # its own best validation (best_valid starts at the base's)
        self.best_top: dict[str, Any] | None = None
        self.epoch = self.stale = self.steps = 0
        self.train_seconds, self.stopped = 0.0, ""
        self.history: list[dict[str, Any]] = []

    def done(self, cfg: TrainConfig) -> bool:
        return bool(self.stopped) or self.epoch >= cfg.text_epochs


def finetune_text(encoder: Any, texts: list[str], train: list[np.ndarray], seen: np.ndarray, cfg: TrainConfig,
                  validate: Callable[[np.ndarray], float], seed: int, progress: bool = True,
                  log: Callable[[str], None] = print, deadline: float | None = None,
                  spill_dir: str | Path | None = None) -> TextFinetuneResult:
    """Fine-tune `encoder`'s top `cfg.finetune_layers` layers with objective `text` for up to
    `cfg.text_epochs` epochs; `validate(vectors)` is validation NDCG@10 of catalogue vectors.
    With `cfg.text_temperature` None each of `TEXT_TEMPERATURES` runs `CHOOSE_AFTER` epochs and
    the one with the best validation goes on alone, as it would have run by itself.
    `deadline` (time.monotonic()) is a safety stop; `spill_dir` holds the cached states of a large
    catalogue (see `PartialEncoder`). The encoder ends with the kept weights."""
    torch.manual_seed(seed)
    torch_rng = torch.get_rng_state()
    started = time.perf_counter()
    autocast = bf16_autocast(encoder.device)
    partial = PartialEncoder(encoder, texts, cfg.finetune_layers, progress=progress,
                             token_dropout=cfg.token_dropout, autocast=autocast,
                             max_length=min(cfg.text_max_length or encoder.max_length, encoder.max_length),
                             spill_dir=spill_dir)
    cache_seconds = time.perf_counter() - started
    counts = cooccurrence(train, len(texts))
    anchors = np.flatnonzero(np.asarray(counts.sum(1)).ravel() > 0)
    unseen = torch.from_numpy(~seen).to(encoder.device)
    vectors = partial.encode_all(progress=False)
    base_valid = validate(vectors)
    log(f"text: base encoder, valid ndcg@10 {base_valid:.4f} (most recent item scoring); "
        f"{len(anchors)} anchor items, {cfg.finetune_layers} top layer(s), bf16 {autocast}; states of "
        f"{len(texts)} items cached in {cache_seconds:.0f}s")
    temperatures = TEXT_TEMPERATURES if cfg.text_temperature is None else (cfg.text_temperature,)
    runs = [_Run(t, partial, cfg, seed, torch_rng, vectors, base_valid) for t in temperatures]
    holder = runs[0]  # whose weights the shared layers hold

    def epoch(run: _Run) -> None:
        nonlocal holder
        if holder is not run:  # hand the layers over
            holder.top = copy.deepcopy(partial.top.state_dict())
            partial.top.load_state_dict(run.top)
            holder = run
        torch.set_rng_state(run.torch_rng)  # token dropout draws from torch's stream
        run.epoch += 1
        partial.train()
        start = time.perf_counter()
        losses = []
        order = run.rng.permutation(anchors)
        for first in range(0, len(order), cfg.text_batch):
            items = order[first:first + cfg.text_batch]
            live = partial(items.tolist())
            target = torch.from_numpy(np.asarray(counts[items].todense(), dtype=np.float32)).to(encoder.device)
            target = target / target.sum(1, keepdim=True)
            logits = (live @ run.bank.T / run.temperature).masked_fill(unseen, float("-inf"))
            logits[torch.arange(len(items)), torch.from_numpy(items).to(encoder.device)] = float("-inf")
            logp = F.log_softmax(logits, 1).masked_fill(target == 0, 0.0)
            loss = -(target * logp).sum(1).mean()
            run.opt.zero_grad()
            loss.backward()
            run.opt.step()
            run.bank[torch.from_numpy(items).to(encoder.device)] = live.detach().float()
            losses.append(loss.item())
            run.steps += 1
        run.train_seconds += time.perf_counter() - start
        row: dict[str, Any] = {"epoch": run.epoch, "loss": float(np.mean(losses)) if losses else None,
                               "seconds": round(time.perf_counter() - start, 2)}
        if len(runs) > 1:
            row["temperature"] = run.temperature
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if run.epoch % VALIDATE_EVERY == 0 or run.epoch == cfg.text_epochs or out_of_time:
            vectors = partial.encode_all(progress=False)
            run.bank = torch.from_numpy(vectors.copy()).to(encoder.device)  # best_vectors stay as validated
            row["valid_ndcg@10"] = valid = validate(vectors)
            run.peak = valid if run.peak is None else max(run.peak, valid)
            improved = valid > run.best_valid
            if improved:
                run.best_valid, run.best_epoch, run.best_vectors = valid, run.epoch, vectors
                run.best_top = copy.deepcopy(partial.top.state_dict())
                run.stale = 0
            else:
                run.stale += 1
            mark = " (best)" if improved else ""
            tau = f" (temperature {run.temperature:g})" if len(runs) > 1 else ""
            log(f"text epoch {run.epoch}{tau}: loss {row['loss']:.4f}, valid ndcg@10 {valid:.4f}{mark}, "
                f"{run.train_seconds:.0f}s")
        run.history.append(row)
        run.torch_rng = torch.get_rng_state()
        if run.stale >= TEXT_PATIENCE:
            run.stopped = "patience"
        elif out_of_time and run.epoch < cfg.text_epochs:  # at the last epoch the stage ended on its own
            run.stopped = "budget"

    if len(runs) > 1:
        for run in runs:
            while run.epoch < CHOOSE_AFTER and not run.done(cfg):
                if run is not runs[0] and run.epoch == 0 and deadline is not None and time.monotonic() >= deadline:
                    run.stopped = "budget"  # the clock is spent: the first runs alone, as a fixed one would
                    break
                epoch(run)
    # by each temperature's own best validation: where neither has passed the base yet, the base's
    # value is a tie that says nothing of which is ahead (a tie goes to the first listed)
    best = max(runs, key=lambda r: float("-inf") if r.peak is None else r.peak)
    if len(runs) > 1:
        log("text: temperature " + ", ".join(f"{r.temperature:g} valid ndcg@10 "
                                             + ("not run" if r.peak is None else f"{r.peak:.4f}") for r in runs)
            + f" after {CHOOSE_AFTER} epochs; {best.temperature:g} goes on")
    while not best.done(cfg):
        epoch(best)
    kept = best.best_top is not None
    partial.top.load_state_dict(best.best_top if kept else partial.initial_top)
    steps, train_seconds = sum(r.steps for r in runs), sum(r.train_seconds for r in runs)
    epochs = sum(len(r.history) for r in runs)
    report = {
        "objective": "text",
        "fine_tuned": kept,
        "layers": cfg.finetune_layers,
        "temperature": best.temperature,
        "best_epoch": best.best_epoch,
        "epochs": len(best.history),
        "steps": steps,
        "stopped": best.stopped or "epochs",
        "valid_ndcg@10": {"base": base_valid, "fine_tuned": best.best_valid},
        "seconds": round(time.perf_counter() - started, 1),
        "cache_seconds": round(cache_seconds, 1),
        "seconds_per_step": round(train_seconds / steps, 3) if steps else None,
        "seconds_per_epoch": round(train_seconds / epochs, 2) if epochs else None,
        "bf16": autocast,
        "history": best.history,
    }
    if len(runs) > 1:
        report["temperatures"] = {f"{r.temperature:g}": {"epochs": len(r.history), "valid_ndcg@10": r.peak}
                                  for r in runs}
        report["chosen_after"] = CHOOSE_AFTER
    log(f"text: {'fine-tuned encoder kept' if kept else 'base encoder kept'} (valid ndcg@10 {base_valid:.4f} -> "
        f"{best.best_valid:.4f}, temperature {best.temperature:g}), {steps} steps, {report['seconds']:.0f}s")
    state = copy.deepcopy(encoder.model.state_dict()) if kept else None
    return TextFinetuneResult(state, best.best_vectors, report)


__all__ = ["finetune_text", "TextFinetuneResult", "cooccurrence", "bf16_autocast"]
