"""SASRec (Kang & McAuley, 2018) on item ids, trained with full-softmax cross-entropy over the
catalogue at every position (much stronger than the original one-negative BCE; Klenitskiy &
Vasilev, 2023), early-stopped on validation NDCG@10. The ID-only bar the text model must beat."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from lmrec import progress_bar
from lmrec.evaluation import FitContext

from ..objectives import windows

log = logging.getLogger(__name__)


@dataclass
class SASRecConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 2e-3
    batch_size: int = 128
    batch_tokens: int = 2048  # long windows get smaller batches, so every epoch has enough steps
    max_epochs: int = 200
    patience: int = 10
    weight_decay: float = 0.0


def trim(batch: np.ndarray) -> np.ndarray:
    """Drop the leading columns that are padding in every row."""
    used = np.flatnonzero((batch > 0).any(0))
    return batch[:, used[0]:] if len(used) else batch[:, -1:]


def left_pad(seqs: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Item indices shifted by one (0 = padding), most recent item in the last column."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, -len(s):] = s + 1
    return out


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (little padding to compute), in random order each epoch."""
    order = np.argsort(lengths + rng.uniform(0, 2, len(lengths)), kind="stable")
    batches = [order[b:b + size] for b in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def build_model(n_items: int, cfg: SASRecConfig):
    import torch
    from torch import nn

    class SASRec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
            self.positions = nn.Embedding(cfg.max_len, cfg.dim)
            self.drop = nn.Dropout(cfg.dropout)
            layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=cfg.dim, dropout=cfg.dropout,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)
            nn.init.normal_(self.items.weight, std=0.02)
            nn.init.normal_(self.positions.weight, std=0.02)

        def forward(self, seq: torch.Tensor) -> torch.Tensor:
            """Hidden states of left-padded `seq` (B, L ≤ max_len); padding is masked out of attention,
            so trimming all-padding columns changes nothing but the cost."""
            length = seq.shape[1]
            pos = torch.arange(cfg.max_len - length, cfg.max_len, device=seq.device)
            pad = seq == 0
            x = self.items(seq) * cfg.dim ** 0.5 + self.positions(pos)
            x = self.drop(x) * ~pad.unsqueeze(-1)
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
            # Blocked: future keys and padding keys; a padding query may see itself (avoids empty rows).
            blocked = (causal | pad.unsqueeze(1)) & ~torch.eye(length, dtype=torch.bool, device=seq.device)
            x = self.blocks(x, mask=blocked.repeat_interleave(cfg.heads, 0))
            return self.norm(x).masked_fill(pad.unsqueeze(-1), 0.0)

        def logits(self, hidden: torch.Tensor) -> torch.Tensor:
            return hidden @ self.items.weight[1:].T

    return SASRec()


class SASRec:
    name = "sasrec"

    def __init__(self, config: SASRecConfig | None = None, **overrides: Any) -> None:
        self.cfg = replace(config or SASRecConfig(), **overrides)
        self.params: dict[str, Any] = asdict(self.cfg)

    def fit(self, ctx: FitContext) -> None:
        import torch

        cfg = self.cfg
        torch.manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        n_items = ctx.split.n_items
        self.model = build_model(n_items, cfg).to(ctx.device)
        data = left_pad(windows(ctx.split.train, cfg.max_len), cfg.max_len + 1)
        lengths = (data > 0).sum(1)
        batch_size = int(np.clip(cfg.batch_tokens // max(1.0, lengths.mean()), 8, cfg.batch_size))
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, stale, history = -1.0, None, 0, []
        bar = progress_bar(range(cfg.max_epochs), desc="sasrec", enabled=ctx.progress, unit="epoch")
        for epoch in bar:
            start = time.perf_counter()
            self.model.train()
            total = 0.0
            for rows in _batches(lengths, batch_size, rng):
                batch = torch.from_numpy(trim(data[rows])).to(ctx.device)
                inputs, labels = batch[:, :-1], batch[:, 1:]
                hidden = self.model(inputs)
                keep = labels > 0
                loss = torch.nn.functional.cross_entropy(self.model.logits(hidden[keep]), labels[keep] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            ndcg = ctx.validate(self.score)
            history.append({"epoch": epoch + 1, "loss": total / len(data), "valid_ndcg@10": ndcg,
                            "seconds": time.perf_counter() - start})
            bar.set_postfix(loss=f"{total / len(data):.3f}", valid_ndcg=f"{ndcg:.4f}")
            log.info("sasrec epoch %d loss %.4f valid ndcg@10 %.4f (%.1fs)", epoch + 1, total / len(data), ndcg,
                     history[-1]["seconds"])
            if ndcg > best:
                best, best_state, stale = ndcg, copy.deepcopy(self.model.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        self.model.load_state_dict(best_state)
        self.params = {
            **asdict(cfg),
            "effective_batch_size": batch_size,
            "epochs_run": len(history),
            "best_valid_ndcg@10": best,
            "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
        }
        self.history = history

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        self.model.eval()
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            seq = torch.from_numpy(trim(left_pad(histories, self.cfg.max_len))).to(device)
            hidden = self.model(seq)[:, -1]
            return self.model.logits(hidden).float().cpu().numpy()
