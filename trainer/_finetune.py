"""Encoder fine-tuning that fits a small CPU: the top layers only, and MLM warm-up.

`PartialEncoder` computes the hidden states entering the top `k` transformer layers once for the
whole catalogue (the frozen bottom of the network never runs again), then trains only those top
layers: a training step costs k/L of a full forward and backward, on each unique item of the
step once. After training, the top layers go back into the full model, which is exported whole.
Training runs the top layers without their dropout (a quarter of a CPU step, and token dropout on
the cached states regularises instead) and, where the hardware has it, under bf16 autocast.

The cached states are one fp16 array (tokens × hidden size, a row range per item), in memory up
to `STATES_IN_MEMORY` bytes and beyond that in an unlinked temporary file (a memory map): a 50 k
catalogue of long descriptions holds 2.5 GB of states, a million items 50 GB, which the page
cache bounds instead of the process's resident memory.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from lmrec import LmrecError, progress_bar
from torch.nn import functional as F

from ._encoder import TorchEncoder

STATES_IN_MEMORY = 1 << 30  # bytes of cached states kept in memory; more go to a temporary file


def _layers(model: Any) -> Any:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None or not hasattr(model, "embeddings"):
        raise LmrecError(f"finetune_layers > 0 needs a BERT-style encoder (embeddings + encoder.layer); "
                         f"{type(model).__name__} is not one (set finetune_layers to 0 and drop 'next')")
    return layers


class PartialEncoder(torch.nn.Module):
    """The top `k` layers of `encoder` over cached hidden states of the catalogue's texts (kept in
    memory up to `memory_limit` bytes, beyond that in a temporary file in `spill_dir`)."""

    def __init__(self, encoder: TorchEncoder, texts: Sequence[str], k: int, batch_size: int = 64,
                 progress: bool = True, token_dropout: float = 0.0, autocast: bool = False,
                 max_length: int | None = None, spill_dir: str | Path | None = None,
                 memory_limit: int = STATES_IN_MEMORY) -> None:
        super().__init__()
        self.token_dropout, self.autocast = token_dropout, autocast
        model = encoder.model
        layers = _layers(model)
        if not 1 <= k <= len(layers):
            raise LmrecError(f"config finetune_layers={k}: the encoder has {len(layers)} layers")
        self.encoder = encoder
        self.top = torch.nn.ModuleList(layers[len(layers) - k:])
        self.below = len(layers) - k
        self.initial_top = copy.deepcopy(self.top.state_dict())
        limit = max_length or encoder.max_length
        lengths = np.array([len(ids) for start in range(0, len(texts), 4096)  # token counts, a chunk at a time
                            for ids in encoder.tokenizer(list(texts[start:start + 4096]), truncation=True,
                                                         max_length=limit)["input_ids"]], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.spill: IO[bytes] | None = None
        self.states = self._allocate(int(self.offsets[-1]), int(model.config.hidden_size), spill_dir, memory_limit)
        # batches by character length, not token count: the same batches, so the same padded states, as
        # before the states had one array (bundles trained then and now agree bit for bit)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        model.eval()
        with torch.inference_mode():
            for start in progress_bar(range(0, len(texts), batch_size), desc=f"cache layer {self.below} states",
                                      enabled=progress, unit="batch"):
                idx = order[start:start + batch_size]
                batch = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=limit,
                                          return_tensors="pt").to(encoder.device)
                states = self._below(batch).to(torch.float16).cpu().numpy()
                for row, i in enumerate(idx):
                    self.states[self.offsets[i]:self.offsets[i + 1]] = states[row, :lengths[i]]

    def _below(self, batch: Any) -> torch.Tensor:
        """The hidden states entering the top layers: the frozen layers alone run (the same operations
        as the whole model's `hidden_states[below]`, so the same bits, at (L - k)/L of its cost)."""
        model = self.encoder.model
        h = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        bias = model.get_extended_attention_mask(batch["attention_mask"], batch["input_ids"].shape)
        for layer in _layers(model)[:self.below]:
            h = layer(h, attention_mask=bias)[0]
        return h

    def _allocate(self, rows: int, width: int, spill_dir: str | Path | None, memory_limit: int) -> np.ndarray:
        """An fp16 array (rows, width): in memory, or memory-mapped on an unlinked temporary file
        in `spill_dir` (the system's temporary folder by default) when over `memory_limit` bytes."""
        if rows * width * 2 <= memory_limit:
            return np.empty((rows, width), dtype=np.float16)
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self.spill = tempfile.TemporaryFile(dir=spill_dir)  # gone when closed, even after a crash
        try:  # reserve the blocks now: a full disk under a memory map is a SIGBUS, not an error
            os.posix_fallocate(self.spill.fileno(), 0, rows * width * 2)
        except OSError as e:
            self.spill.close()
            where = spill_dir or tempfile.gettempdir()
            raise LmrecError(f"objective text: the cached states of {len(self.offsets) - 1} texts need "
                             f"{rows * width * 2 / 2**30:.1f} GiB in {where} ({e.strerror}); free space there "
                             f"or lower text_max_length") from None
        return np.memmap(self.spill, dtype=np.float16, mode="w+", shape=(rows, width))

    def _rows(self, items: Sequence[int]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.asarray(self.states[self.offsets[i]:self.offsets[i + 1]])) for i in items]

    def train(self, mode: bool = True) -> PartialEncoder:
        super().train(mode)
        self.top.train(False)  # no dropout inside the layers (see the module docstring)
        return self

    def forward(self, items: Sequence[int]) -> torch.Tensor:
        """Pooled, L2-normalised vectors (len(items), d) through the trainable top layers."""
        device = self.encoder.device
        rows = self._rows(items)
        if self.training and self.token_dropout > 0:  # drop cached tokens: the text augmentation
            dropped = [r[torch.rand(len(r)) >= self.token_dropout] if len(r) > 2 else r for r in rows]
            rows = [d if len(d) else r[:1] for d, r in zip(dropped, rows, strict=True)]
        length = max(len(r) for r in rows)
        h = torch.zeros(len(rows), length, rows[0].shape[1], device=device)
        mask = torch.zeros(len(rows), length, device=device)
        for n, r in enumerate(rows):
            h[n, :len(r)] = r.to(device, torch.float32)
            mask[n, :len(r)] = 1.0
        bias = self.encoder.model.get_extended_attention_mask(mask, mask.shape)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast and self.training):
            for layer in self.top:
                h = layer(h, attention_mask=bias)[0]
        h = h.float()
        pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def encode_all(self, batch_size: int = 128, progress: bool = True) -> np.ndarray:
        order = np.argsort(-np.diff(self.offsets), kind="stable")
        out = np.zeros((len(self.offsets) - 1, self.states.shape[1]), dtype=np.float32)
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for start in progress_bar(range(0, len(order), batch_size), desc="re-encode catalogue", enabled=progress,
                              unit="batch"):
                idx = order[start:start + batch_size].tolist()
                out[idx] = self.forward(idx).cpu().numpy()
        self.train(was_training)
        return out


def mlm_warmup(encoder: TorchEncoder, texts: Sequence[str], epochs: int, lr: float, probability: float,
               batch_size: int, rng: np.random.Generator, progress: bool = True,
               log: Any = print) -> list[float]:
    """Masked language modelling on the item texts; the encoder's weights are updated in place.
    Returns the mean loss per epoch."""
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    try:
        mlm = AutoModelForMaskedLM.from_pretrained(encoder.name, attn_implementation="eager")
    except (OSError, ValueError) as e:
        raise LmrecError(f"objective mlm: {encoder.name} has no masked-LM form ({e})") from None
    base = getattr(mlm, mlm.base_model_prefix)
    base.load_state_dict(encoder.model.state_dict(), strict=False)
    mlm.to(encoder.device).train()
    collator = DataCollatorForLanguageModeling(encoder.tokenizer, mlm_probability=probability, return_tensors="pt")
    opt = torch.optim.AdamW(mlm.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(texts))
        total, n = 0.0, 0
        bar = progress_bar(range(0, len(order), batch_size), desc=f"mlm epoch {epoch + 1}", enabled=progress,
                   unit="batch")
        for start in bar:
            chunk = [texts[i] for i in order[start:start + batch_size]]
            enc = encoder.tokenizer(chunk, truncation=True, max_length=encoder.max_length)
            batch = collator([{k: enc[k][j] for k in enc} for j in range(len(chunk))])
            batch = {k: v.to(encoder.device) for k, v in batch.items()}
            loss = mlm(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(chunk)
            n += len(chunk)
            bar.set_postfix(loss=f"{total / n:.3f}")
        losses.append(total / max(n, 1))
        log(f"mlm epoch {epoch + 1}: loss {losses[-1]:.4f}")
    encoder.model.load_state_dict(base.state_dict(), strict=False)
    encoder.model.eval()
    return losses
