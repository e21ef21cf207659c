"""Losses and sequence handling shared by the training phases (see `_config.OBJECTIVES` for sources)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

PAD = -1  # no item: zero vector, hidden from attention
MASK = -2  # an item hidden by augmentation: zero vector, still a position


def windows(seqs: Sequence[np.ndarray], max_len: int, overlap: float = 0.0,
            rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Cut each sequence from its end into windows of max_len + 1 items (inputs + next-item labels).
    Disjoint windows give the first labels of each only a short history; with `overlap` > 0 each
    further window also repeats, at its end, up to that share of max_len labels of the window after
    it (a number drawn per window from `rng`), so they are learnt with a full history as well."""
    out = []
    most = int(overlap * max_len) if rng is not None else 0
    for s in seqs:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append(np.asarray(s[start:end], dtype=np.int64))
            if start == 0:
                break
            end = start + 1 + (int(rng.integers(0, most + 1)) if rng is not None and most else 0)
    return out


def left_pad(seqs: Sequence[np.ndarray], length: int) -> np.ndarray:
    """(n, length) item indices, most recent last, PAD on the left; longer sequences keep their end."""
    out = np.full((len(seqs), length), PAD, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, length - len(s):] = s
    return out


def gather(vectors: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(item vectors (…, d), mask (…)) for indices with PAD/MASK: both give a zero vector; PAD has mask 0."""
    zero = torch.zeros(1, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    table = torch.cat([vectors, zero])
    safe = torch.where(idx < 0, torch.full_like(idx, len(vectors)), idx)
    return table[safe], (idx != PAD).to(vectors.dtype)


def augment(seq: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """One CL4SRec view: crop (keep a 1 - ratio span), mask (hide a ratio share) or reorder (shuffle a span)."""
    n = len(seq)
    if n < 2 or ratio <= 0:
        return seq.copy()
    kind = rng.integers(3)
    if kind == 0:
        keep = max(1, int(np.ceil((1 - ratio) * n)))
        start = rng.integers(n - keep + 1)
        return seq[start:start + keep].copy()
    out = seq.copy()
    span = max(1, int(ratio * n))
    if kind == 1:
        out[rng.choice(n, span, replace=False)] = MASK
    else:
        start = rng.integers(n - span + 1)
        out[start:start + span] = rng.permutation(out[start:start + span])
    return out


def full_softmax_ce(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                    hidden: torch.Tensor | None = None, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each user's target over the catalogue (scores = user · item); items where
    `hidden` is True take no part (items unseen in training: at training time they do not exist
    yet, and as never-positive negatives they would be learned away — the cold-start failure).
    `offset` (n_items,) is added to the logits in training only (the popularity prior)."""
    logits = users @ items.T
    if offset is not None:
        logits = logits + offset
    if hidden is not None:
        logits = logits.masked_fill(hidden, float("-inf"))
    return F.cross_entropy(logits, targets)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: row i of `a` and of `b` are positives; the other 2n - 2 rows are negatives."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / temperature
    n = len(a)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def pair_infonce(
    a: torch.Tensor, b: torch.Tensor, temperature: float, same: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE between unit vectors a[i] and b[i]; `same` (n, n) marks other
    pairs that share the positive item (not counted as negatives)."""
    logits = a @ b.T / temperature
    if same is not None:
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def sampled_softmax(users: torch.Tensor, candidates: torch.Tensor, target_pos: torch.Tensor,
                    log_q: torch.Tensor, collide: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of users (b, d) over candidate item vectors (c, d), with the logQ correction
    (Yi et al. 2019): subtracting the log sampling probability of each candidate undoes the
    popularity bias of in-batch and sampled negatives. `collide` (b, c) hides candidates that
    are the row's target item again."""
    logits = users @ candidates.T - log_q
    if collide is not None:
        logits = logits.masked_fill(collide, float("-inf"))
    return F.cross_entropy(logits, target_pos)


def catalogue_sample(targets: np.ndarray, pool: np.ndarray, size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates, log inclusion probabilities, each target's position among the candidates) of a
    sampled catalogue softmax: the batch's targets always take part, and `size` items drawn
    uniformly without replacement from the rest of `pool` (sorted, unique) stand for that rest.
    Given the batch, a drawn item is in with probability size / len(rest): subtracting its log
    (`sampled_softmax`'s `log_q`) makes the sampled partition function an unbiased estimate of the
    full one (Bengio & Senecal 2008), at a fraction of the full softmax's cost on large catalogues."""
    batch = np.unique(targets)
    rest = np.setdiff1d(pool, batch, assume_unique=True)
    k = min(size, len(rest))
    drawn = np.sort(rng.choice(rest, k, replace=False)) if k else rest[:0]
    log_p = np.zeros(len(batch) + k, dtype=np.float32)
    log_p[len(batch):] = np.log(k / len(rest)) if k else 0.0
    return np.concatenate([batch, drawn]), log_p, np.searchsorted(batch, targets)
