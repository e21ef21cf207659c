"""Training configuration: one flat dataclass, loadable from JSON, recorded whole in the manifest.

The defaults are where `lmrec train` starts its search over the settings that matter
(trainer/_autotune.py); bench/configs/ records what it chose on the shared datasets. A
command-line flag fixes a single field; a config file fixes them all (no search). Unknown keys
and out-of-range values are errors that name the field and the limit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lmrec import LmrecError

# The self-supervised objectives, each switchable (`objectives` / --objectives). The user
# model's full-softmax cross-entropy over the catalogue (Klenitskiy & Vasilev 2023, "Turning
# Dross Into Gold Loss: is BERT4Rec really better than SASRec?") is always on: it is what the
# user model is.
OBJECTIVES = {
    # 1. sequence -> next item: InfoNCE between the user state and the next item's text embedding, in-batch
    #    + sampled negatives, logQ-corrected (Yi et al. 2019, "Sampling-bias-corrected neural modeling");
    #    fine-tunes the encoder's top layers (needs finetune_layers > 0).
    "next": "fine-tune the encoder's top layers: user state -> next item text, InfoNCE, logQ-corrected negatives",
    # 2. item <-> item: consecutive items are positives (Recformer, Li et al. 2023; BLaIR, Hou et al. 2024).
    "cooc": "consecutive items in a sequence are positives: in-batch InfoNCE over item vectors",
    # 3. masked language modelling on item text (BERT, Devlin et al. 2019; domain-adaptive pre-training,
    #    Gururangan et al. 2020): an optional warm-up of the encoder before anything else.
    "mlm": "masked language modelling on item text: encoder warm-up for the domain",
    # 4. sequence augmentation contrastive (CL4SRec, Xie et al. 2022): crop / mask / reorder two views
    #    of a history, their user vectors are positives.
    "cl": "two augmented views (crop/mask/reorder) of a history agree: NT-Xent on user vectors",
    # 5. item text -> co-occurring items over a memory bank of the catalogue, text-only item tower
    #    (BLaIR, Hou et al. 2024; Recformer, Li et al. 2023): a stage before the user model whose
    #    gains reach items without interactions (trainer/_text_finetune.py).
    "text": "fine-tune the encoder's top layers: an item's text predicts its neighbours in sequences",
}

# text_temperature None: the text stage runs each of these for a few epochs and the best on its
# validation goes on. 0.05 fits a catalogue's few heavy neighbours, 0.1 also its tail: on
# MovieLens' short titles only 0.1 reaches new items (bench/RESULTS.md, "The temperature chosen in
# the stage").
TEXT_TEMPERATURES = (0.05, 0.1)
# test_like_origins None, where the split holds new items: test-like validations that judge β
TEST_LIKE_ORIGINS = 3


@dataclass
class TrainConfig:
    """What `lmrec train` does; `asdict(config)` is stored in the manifest under training.config."""

    objectives: tuple[str, ...] = ("text", "cl", "cooc")
    base_model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    max_length: int = 128
    # item tower: vector = normalise(adapter(text embedding) + residual); residual only for training items
    adapter: bool = True
    residual: bool = True
    residual_dropout: float = 0.3  # share of items whose residual is dropped per step (trains the cold path)
    # an item without a residual borrows those of its borrow_k nearest trained items in text space
    # (softmax(cos / borrow_temperature) x borrow_shrink); 0: it has none
    borrow_k: int = 10
    borrow_temperature: float = 0.05
    borrow_shrink: float = 1.0
    # added to new items' scores under the user model; None: chosen on validation where the split
    # has new items (the least that ranks them as well as the untrained encoder does), else 0
    new_item_bonus: float | None = None
    # the user vector served turns recent_weight of its direction towards the mean of the last
    # recent_items item vectors (lmrec.UserModelInfo); None: the weight is chosen on validation
    recent_items: int = 3
    recent_weight: float | None = None
    # the served score adds text_weight x |u| x the cosine between an item's text vector and the mean
    # text vector of the history's last text_items items (lmrec.UserModelInfo); None: chosen on validation
    text_items: int = 1
    text_weight: float | None = None
    # items without a residual (new) also get centred_text_weight x |u| x (that cosine - its value at
    # the trained items' mean text vector) (lmrec.UserModelInfo); None: chosen with text_weight where
    # new items get borrowed residuals, else 0
    centred_text_weight: float | None = None
    # test-like validations that judge β together: the k-th trains the kept settings on the split k
    # interactions shorter; the rule reads all their cases at once. None: TEST_LIKE_ORIGINS where
    # the split holds new items (one validation holds ~130 new targets on MovieLens, too few to
    # weigh them: bench/RESULTS.md, "Choosing β with less variance"), else 1
    test_like_origins: int | None = None
    # training-only logit offset popularity_prior * log(1 + training count): the user model learns what
    # a user wants beyond popularity, the one thing a new item cannot have (see bench/RESULTS.md, "Quality")
    popularity_prior: float = 0.0
    # user model: causal transformer over the history's item vectors
    max_history: int = 50
    # training windows of histories longer than max_history + 1 repeat, each epoch, a random share of
    # up to this much of the next window's first labels, so those are learnt with a full history
    # too (objectives.windows; as SASRec's; bench/RESULTS.md "Overlapping windows in the user
    # model"); 0: disjoint windows cut once
    window_overlap: float = 0.5
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    adapter_lr: float = 1e-4
    residual_lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    # the user model's cross-entropy runs over every training item up to this many; over more (large
    # catalogues, where the full softmax costs items x interactions), over a uniform sample of this
    # many plus the batch's targets, corrected to estimate the full softmax (0: always every item)
    softmax_items: int = 16384
    epochs: int = 60
    patience: int = 8
    # objective "cl"
    cl_weight: float = 0.1
    cl_temperature: float = 1.0
    augment_ratio: float = 0.3  # crop keeps 1 - ratio, mask hides ratio, reorder shuffles a ratio-long span
    # objective "cooc"
    cooc_weight: float = 0.1
    cooc_temperature: float = 0.05
    # encoder fine-tuning: the top layers over cached hidden states (objectives "text" and "next")
    finetune_layers: int = 2
    # objective "text"
    text_epochs: int = 20
    text_lr: float = 5e-5
    text_temperature: float | None = None  # None: chosen on the stage's validation (TEXT_TEMPERATURES)
    text_batch: int = 128
    text_max_length: int | None = None  # tokens of the cached states it trains on (None: max_length, as served)
    token_dropout: float = 0.3
    # objective "next" (and "cooc" while it runs)
    encoder_lr: float = 3e-5
    encoder_steps: int = 200
    encoder_batch: int = 64
    negatives: int = 256
    temperature: float = 0.05
    # objective "mlm"
    mlm_epochs: int = 1
    mlm_lr: float = 5e-5
    mlm_probability: float = 0.15

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)
        check(self)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    def with_(self, **changes: Any) -> TrainConfig:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise LmrecError(f"config: unknown field {unknown[0]!r} (known: {', '.join(f.name for f in fields(self))})")
        return replace(self, **changes)


_RANGES: dict[str, tuple[float, float]] = {
    "max_length": (8, 512),
    "max_history": (1, 512),
    "window_overlap": (0.0, 0.9),
    "hidden": (4, 4096),
    "layers": (1, 24),
    "heads": (1, 64),
    "dropout": (0.0, 0.9),
    "lr": (0.0, 1.0),
    "adapter_lr": (0.0, 1.0),
    "residual_lr": (0.0, 1.0),
    "weight_decay": (0.0, 1.0),
    "batch_size": (1, 65536),
    "softmax_items": (0, 100_000_000),
    "epochs": (0, 100000),
    "patience": (1, 100000),
    "cl_weight": (0.0, 100.0),
    "cl_temperature": (1e-3, 100.0),
    "augment_ratio": (0.0, 0.9),
    "cooc_weight": (0.0, 100.0),
    "cooc_temperature": (1e-3, 100.0),
    "finetune_layers": (0, 48),
    "encoder_lr": (0.0, 1.0),
    "encoder_steps": (0, 10_000_000),
    "encoder_batch": (2, 65536),
    "negatives": (0, 1_000_000),
    "temperature": (1e-3, 100.0),
    "mlm_epochs": (0, 1000),
    "mlm_lr": (0.0, 1.0),
    "mlm_probability": (0.01, 0.9),
    "residual_dropout": (0.0, 1.0),
    "popularity_prior": (0.0, 10.0),
    "recent_items": (1, 1000),
    "text_items": (1, 1000),
    "borrow_k": (0, 1000),
    "borrow_temperature": (1e-3, 100.0),
    "borrow_shrink": (0.0, 10.0),
    "text_epochs": (0, 10000),
    "text_lr": (0.0, 1.0),
    "text_batch": (2, 65536),
    "token_dropout": (0.0, 0.9),
    # may also be null (_NULLS)
    "new_item_bonus": (0.0, 10.0),
    "text_weight": (0.0, 10.0),
    "centred_text_weight": (0.0, 10.0),
    "test_like_origins": (1, 10),
    "text_temperature": (1e-3, 100.0),
    "text_max_length": (8, 512),
}
_NULLS = {"new_item_bonus": "chosen on validation", "text_weight": "chosen on validation",
          "centred_text_weight": "chosen with text_weight",
          "test_like_origins": f"{TEST_LIKE_ORIGINS} where the split holds new items, else 1",
          "text_temperature": "chosen on validation", "text_max_length": "max_length, what the export serves"}
_INTS = {"max_length", "max_history", "hidden", "layers", "heads", "batch_size", "softmax_items", "epochs", "patience",
         "finetune_layers", "encoder_steps", "encoder_batch", "negatives", "mlm_epochs", "borrow_k", "text_epochs",
         "text_batch", "recent_items", "text_items", "test_like_origins", "text_max_length"}


def check_ranges(settings: Any, ranges: dict[str, tuple[float, float]], ints: set[str], prefix: str,
                 nulls: dict[str, str] | None = None) -> None:
    """Each field of `ranges` within its bounds (an integer where in `ints`), else an error naming it;
    a field of `nulls` may also be None (the error says what None means)."""
    nulls = nulls or {}
    for name, (lo, hi) in ranges.items():
        value = getattr(settings, name)
        if value is None and name in nulls:
            continue
        kind = int if name in ints else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
            what = "an integer" if name in ints else "a number"
            null = f", or null ({nulls[name]})" if name in nulls else ""
            raise LmrecError(f"{prefix}{name}={value!r}: must be {what} from {lo:g} to {hi:g}{null}")


def check(cfg: TrainConfig) -> None:
    check_ranges(cfg, _RANGES, _INTS, "config ", _NULLS)
    for name in ("adapter", "residual"):
        if not isinstance(getattr(cfg, name), bool):
            raise LmrecError(f"config {name}={getattr(cfg, name)!r}: must be true or false")
    if cfg.hidden % cfg.heads:
        raise LmrecError(f"config hidden={cfg.hidden}: must be a multiple of heads={cfg.heads}")
    unknown = [o for o in cfg.objectives if o not in OBJECTIVES]
    if unknown:
        raise LmrecError(f"objectives: unknown objective {unknown[0]!r} (known: {', '.join(OBJECTIVES)})")
    if len(set(cfg.objectives)) != len(cfg.objectives):
        raise LmrecError("objectives: an objective is named twice")
    if cfg.base_model is not None and not isinstance(cfg.base_model, str):
        raise LmrecError(f"config base_model={cfg.base_model!r}: must be a model folder or Hugging Face id")
    for name in ("next", "text"):
        if name in cfg.objectives and cfg.finetune_layers < 1:
            raise LmrecError(f"objectives: {name!r} fine-tunes the encoder and needs finetune_layers >= 1")
    weight = cfg.recent_weight
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < 1):
        raise LmrecError(f"config recent_weight={weight!r}: must be a number from 0 to below 1, "
                         "or null (chosen on validation)")
    for name in ("recent_items", "text_items"):
        if getattr(cfg, name) > cfg.max_history:
            raise LmrecError(f"config {name}={getattr(cfg, name)}: must be at most max_history={cfg.max_history}")
    if cfg.centred_text_weight and (cfg.borrow_k < 1 or not cfg.residual):
        raise LmrecError(f"config centred_text_weight={cfg.centred_text_weight!r}: scores items without a residual "
                         "and needs them borrowing (residual true, borrow_k >= 1)")


def parse_objectives(text: str) -> tuple[str, ...]:
    """`--objectives cl,cooc` (or `none`) to a tuple, naming an unknown objective."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    for n in names:
        if n not in OBJECTIVES:
            raise LmrecError(f"--objectives: unknown objective {n!r} (known: {', '.join(OBJECTIVES)}, or none)")
    return names


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the JSON object in `path`, then `overrides` (command-line flags that were given;
    a null among them counts: `--set text_temperature=null` sets a field back to "chosen on validation")."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise LmrecError(f"--config {path}: no such file")
        try:
            values = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LmrecError(f"--config {path}: not valid JSON ({e})") from None
        if not isinstance(values, dict):
            raise LmrecError(f"--config {path}: expected a JSON object of settings")
    values.update(overrides)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LmrecError(f"config: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if isinstance(values.get("objectives"), str):
        values["objectives"] = parse_objectives(values["objectives"])
    if not isinstance(values.get("objectives", ()), (list, tuple)):
        raise LmrecError("config objectives: must be a list of objective names")
    return TrainConfig(**values)


__all__ = ["TrainConfig", "OBJECTIVES", "TEXT_TEMPERATURES", "load_config", "parse_objectives"]
