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
the states are cut at `text_max_length` tokens (64: item titles fit, and a step costs half). Each
second epoch is validated by scoring with the most recent history item (the untrained user model),
on the split's validation cases; the best epoch, or the base encoder, is kept.
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

from ._config import TrainConfig
from ._finetune import PartialEncoder

VALIDATE_EVERY = 2  # epochs between validations (a validation re-encodes the catalogue)
TEXT_PATIENCE = 3  # validations without a new best before the stage stops


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


def finetune_text(encoder: Any, texts: list[str], train: list[np.ndarray], seen: np.ndarray, cfg: TrainConfig,
                  validate: Callable[[np.ndarray], float], seed: int, progress: bool = True,
                  log: Callable[[str], None] = print, deadline: float | None = None,
                  spill_dir: str | Path | None = None) -> TextFinetuneResult:
    """Fine-tune `encoder`'s top `cfg.finetune_layers` layers with objective `text` for up to
    `cfg.text_epochs` epochs; `validate(vectors)` is validation NDCG@10 of catalogue vectors.
    `deadline` (time.monotonic()) is a safety stop; `spill_dir` holds the cached states of a large
    catalogue (see `PartialEncoder`). The encoder ends with the kept weights."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    autocast = bf16_autocast(encoder.device)
    partial = PartialEncoder(encoder, texts, cfg.finetune_layers, progress=progress,
                             token_dropout=cfg.token_dropout, autocast=autocast,
                             max_length=min(cfg.text_max_length, encoder.max_length), spill_dir=spill_dir)
    cache_seconds = time.perf_counter() - started
    counts = cooccurrence(train, len(texts))
    anchors = np.flatnonzero(np.asarray(counts.sum(1)).ravel() > 0)
    unseen = torch.from_numpy(~seen).to(encoder.device)
    opt = torch.optim.AdamW(list(partial.top.parameters()), lr=cfg.text_lr, weight_decay=0.0)
    vectors = partial.encode_all(progress=False)
    base_valid = validate(vectors)
    best_valid, best_epoch, best_top, best_vectors = base_valid, 0, None, vectors
    log(f"text: base encoder, valid ndcg@10 {base_valid:.4f} (most recent item scoring); "
        f"{len(anchors)} anchor items, {cfg.finetune_layers} top layer(s), bf16 {autocast}; states of "
        f"{len(texts)} items cached in {cache_seconds:.0f}s")
    bank = torch.from_numpy(vectors).to(encoder.device)
    steps, train_seconds, stale, stopped = 0, 0.0, 0, ""
    history: list[dict[str, Any]] = []
    for epoch in range(1, cfg.text_epochs + 1):
        partial.train()
        start = time.perf_counter()
        losses = []
        order = rng.permutation(anchors)
        for first in range(0, len(order), cfg.text_batch):
            items = order[first:first + cfg.text_batch]
            live = partial(items.tolist())
            target = torch.from_numpy(np.asarray(counts[items].todense(), dtype=np.float32)).to(encoder.device)
            target = target / target.sum(1, keepdim=True)
            logits = (live @ bank.T / cfg.text_temperature).masked_fill(unseen, float("-inf"))
            logits[torch.arange(len(items)), torch.from_numpy(items).to(encoder.device)] = float("-inf")
            logp = F.log_softmax(logits, 1).masked_fill(target == 0, 0.0)
            loss = -(target * logp).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bank[torch.from_numpy(items).to(encoder.device)] = live.detach().float()
            losses.append(loss.item())
            steps += 1
        train_seconds += time.perf_counter() - start
        row: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                               "seconds": round(time.perf_counter() - start, 2)}
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if epoch % VALIDATE_EVERY == 0 or epoch == cfg.text_epochs or out_of_time:
            vectors = partial.encode_all(progress=False)
            bank = torch.from_numpy(vectors).to(encoder.device)
            row["valid_ndcg@10"] = valid = validate(vectors)
            improved = valid > best_valid
            if improved:
                best_valid, best_epoch, best_vectors = valid, epoch, vectors
                best_top = copy.deepcopy(partial.top.state_dict())
                stale = 0
            else:
                stale += 1
            mark = " (best)" if improved else ""
            log(f"text epoch {epoch}: loss {row['loss']:.4f}, valid ndcg@10 {valid:.4f}{mark}, {train_seconds:.0f}s")
        history.append(row)
        if stale >= TEXT_PATIENCE:
            stopped = "patience"
            break
        if out_of_time and epoch < cfg.text_epochs:  # at the last epoch the stage ended on its own
            stopped = "budget"
            break
    kept = best_top is not None
    if kept:
        partial.top.load_state_dict(best_top)
    else:
        partial.top.load_state_dict(partial.initial_top)
    report = {
        "objective": "text",
        "fine_tuned": kept,
        "layers": cfg.finetune_layers,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "steps": steps,
        "stopped": stopped or "epochs",
        "valid_ndcg@10": {"base": base_valid, "fine_tuned": best_valid},
        "seconds": round(time.perf_counter() - started, 1),
        "cache_seconds": round(cache_seconds, 1),
        "seconds_per_step": round(train_seconds / steps, 3) if steps else None,
        "seconds_per_epoch": round(train_seconds / len(history), 2) if history else None,
        "bf16": autocast,
        "history": history,
    }
    log(f"text: {'fine-tuned encoder kept' if kept else 'base encoder kept'} (valid ndcg@10 {base_valid:.4f} -> "
        f"{best_valid:.4f}), {steps} steps, {report['seconds']:.0f}s")
    state = copy.deepcopy(encoder.model.state_dict()) if kept else None
    return TextFinetuneResult(state, best_vectors, report)


__all__ = ["finetune_text", "TextFinetuneResult", "cooccurrence", "bf16_autocast"]
