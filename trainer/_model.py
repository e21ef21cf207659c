"""The two trainable towers: item vectors from text, and the user model over a history of them.

Item vector = normalise(t + residual), t = normalise(adapter(text embedding)). The adapter is
affine, so the export bakes it into the item encoder graph (as `append_projection` does for PCA)
and a new item embedded by the SDK lands in the trained space (t is what that graph outputs). The
residual exists only for items seen in training: it carries collaborative signal text lacks. An
item without one borrows the residuals of its nearest trained items in text space
(lmrec.ResidualTable); training simulates that on the items whose residual it drops, so the user
model learns to rank items by their text and borrowed residual (`borrow`).

The user model is a small causal transformer (pre-LN, SASRec-like) over the history's item
vectors with learned recency positions (histories are left-padded, so the last position is
always the most recent item). Its output adds to the most recent item's vector (a skip
connection, the correction starting at zero): training starts from the zero-shot "more like the
last item" user and learns what the history adds. Scores are `user_vector · item_vector`,
exactly as the SDK computes them, so the user vector's norm is the learned softmax temperature.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

MASKED = -1e4  # additive attention bias for hidden keys (finite: fp16 and ONNX friendly)


class ItemTower(nn.Module):
    """Item vectors from fixed text embeddings `base` (n, d): optional affine adapter (identity at
    start) and per-item residuals for the items in `seen` (zero elsewhere, and never trained)."""

    def __init__(self, base: torch.Tensor, seen: torch.Tensor, adapter: bool = True, residual: bool = True,
                 borrow: torch.Tensor | None = None) -> None:
        super().__init__()
        self.borrow = borrow  # sparse (n, n): row i, the weights trained item i borrows with when dropped
        n, dim = base.shape
        self.register_buffer("base", base.float().clone())
        self.register_buffer("seen", seen.float().reshape(n, 1).clone())
        self.adapter = nn.Linear(dim, dim) if adapter else None
        if self.adapter is not None:
            with torch.no_grad():
                self.adapter.weight.copy_(torch.eye(dim))
                self.adapter.bias.zero_()
        self.residual = nn.Parameter(torch.zeros(n, dim)) if residual else None

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def transform(self, text: torch.Tensor, items: torch.Tensor | None = None,
                  keep: torch.Tensor | None = None) -> torch.Tensor:
        """normalise(t + residual[items]) (every item when `items` is None); `keep` (one per row)
        drops residuals where 0 (with `borrow`, dropped items take their borrowed residual instead:
        a simulated new item)."""
        z = F.normalize(self.adapter(text) if self.adapter is not None else text, dim=-1)
        if self.residual is not None:
            seen = self.seen if items is None else self.seen[items]
            r = (self.residual if items is None else self.residual[items]) * seen
            if keep is not None:
                keep = keep.reshape(-1, 1)
                r = r * keep
                if self.borrow is not None:
                    lend = self.borrow if items is None else self.borrow.index_select(0, items)
                    # borrow's columns are trained items only: no mask over the whole residual matrix
                    r = r + (1.0 - keep) * seen * torch.sparse.mm(lend, self.residual)
            z = z + r
        return F.normalize(z, dim=-1)

    def text(self) -> torch.Tensor:
        """t for every item: what the exported encoder graph outputs (normalised, adapter applied)."""
        return F.normalize(self.adapter(self.base) if self.adapter is not None else self.base, dim=-1)

    def forward(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """All item vectors (n, d), L2-normalised."""
        return self.transform(self.base, None, keep)

    def subset(self, items: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """forward(keep)[items] without the rest of the catalogue: a sampled softmax's step needs
        only its own items, and on large catalogues the tower over all of them dominates the step."""
        return self.transform(self.base[items], items, None if keep is None else keep[items])

    def affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(weight (d_in, d_out), bias (d_out,)) with x ↦ x @ weight + bias: the adapter as the export bakes it."""
        if self.adapter is None:
            return None
        return self.adapter.weight.detach().T.contiguous(), self.adapter.bias.detach().clone()

    def residuals(self) -> torch.Tensor | None:
        return None if self.residual is None else (self.residual * self.seen).detach()


class Block(nn.Module):
    """Pre-LN transformer block with an explicit additive attention bias (exports to plain ONNX ops)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, hidden)
        self.ff2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape
        hd = hidden // self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, length, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(b, length, hidden)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))


class UserModel(nn.Module):
    """Causal transformer: (history (b, L, d) item vectors, mask (b, L)) -> a user vector per position."""

    def __init__(self, dim: int, max_history: int, hidden: int = 64, layers: int = 2, heads: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.max_history = max_history
        self.inp = nn.Linear(dim, hidden)
        self.positions = nn.Parameter(torch.randn(max_history, hidden) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(hidden, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)  # starts as the zero-shot "most recent item" user, learns a correction
        nn.init.zeros_(self.out.bias)
        # cosine-softmax temperature 1/20 to start with; learned from there (the norm of the user vector)
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = history.shape[1]
        h = self.inp(history) + self.positions[self.max_history - length:]
        h = self.drop(h) * mask.unsqueeze(-1)
        idx = torch.arange(length, device=history.device)
        causal = idx.unsqueeze(0) <= idx.unsqueeze(1)  # (query, key): keys up to the query
        itself = idx.unsqueeze(0) == idx.unsqueeze(1)  # a padded query sees itself: no all-hidden row
        allowed = (causal.unsqueeze(0) & (mask.unsqueeze(1) > 0)) | itself
        bias = torch.where(allowed, 0.0, MASKED).to(h.dtype).unsqueeze(1)  # (b, 1, L, L)
        for block in self.blocks:
            h = block(h, bias)
        # skip connection: the item at each position plus what the history adds to it
        return (history + self.out(self.norm(h))) * self.log_scale.exp()

    def last(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The user vector after the most recent item (the SDK's user_encoder.onnx output)."""
        return self.forward(history, mask)[:, -1]


class UserEncoderExport(nn.Module):
    """What `user_encoder.onnx` computes: inputs `history` (b, L, d) float32 (left-padded, most recent
    last) and `mask` (b, L) float32; output `user_vector` (b, d)."""

    def __init__(self, model: UserModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.last(history, mask)


def export_user_encoder(model: UserModel, dim: int, path: str) -> None:
    """Write the user model as ONNX (dynamic batch, fixed max_history: what the SDK feeds)."""
    import warnings

    model = model.eval()
    history = torch.zeros(2, model.max_history, dim)
    mask = torch.zeros(2, model.max_history)
    mask[:, -3:] = 1.0
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(UserEncoderExport(model), (history, mask), path, input_names=["history", "mask"],
                          output_names=["user_vector"], opset_version=17, do_constant_folding=True,
                          dynamic_axes={"history": {0: "batch"}, "mask": {0: "batch"}, "user_vector": {0: "batch"}},
                          dynamo=False)
