"""Train the aggregation network and the fusion weight w on feature files; validate by mAP.

Feature file format (``.npz``, written by ``python -m retrieval.engine.evaluate --features-out``
or by anyone else, read by :func:`load_features`), C categories, N database photos, K proxies:

=================  ==============  ===========================================================
key                shape / dtype   meaning
=================  ==============  ===========================================================
proxy_features     (C, K, Dv) f32  V(proxy image), the vision features of the K generated
                                   proxies of each category (L2-normalised rows)
text_features      (C, Dt) f32     t, the (template-ensembled) text vector of each category
category_names     (C,) str        the query text of each category
db_vlm             (N, Dt) f32     I(x), VLM image features of the database photos
db_vision          (N, Dv) f32     V(x), vision features of the database photos
db_labels          (N,) int        category index (0..C-1) of each database photo
metadata           () str          optional JSON object: profile, model versions, seeds, ...
=================  ==============  ===========================================================

Training (METHOD.md, "Training the aggregator"):

* **Category split.** A seeded random ``val_fraction`` of the categories is held out. Training
  sees only the proxies, text vectors and photos of the training categories; validation ranks
  the *whole* database (every photo is a candidate, as in the evaluation protocol) for the
  held-out queries, which the network never saw.
* **Loss.** Symmetric softmax cross-entropy on the fused scores
  ``s_c(x) = (1-λ)<t_c, I(x)> + λ<q_c, V(x)>`` of the training queries c against a mini-batch of
  training photos x, divided by a learned temperature (initialised at 0.05, CLIP-style):
  (a) per photo, a softmax over the training categories, target its own category (the loss
  METHOD.md names); (b) per query, a softmax over the batch's photos, averaged over its positives.
  Why both: (a) alone is blind to any component that all queries share (it cancels in a softmax
  over categories) although such a component shifts each photo's score in a ranking, while (b)
  is the retrieval direction that mAP measures. Why not smooth-AP: cross-entropy is smooth with
  well-behaved gradients for both the network and w, needs no ranking-approximation
  hyper-parameters, and contrasts each query with all categories at once. The temperature is
  learned because the text and vision similarities live on different scales: with a fixed
  temperature the loss could move λ merely to rescale the logits. In (a) categories are weighted
  by 1/#photos so that, like mAP, each category counts the same whatever its number of photos.
* **Optimiser.** Adam, seeded torch + a seeded generator for the photo order, so a run is
  repeatable on the same machine.
* **Architecture.** ``TrainConfig.architecture`` picks cletir's network or the authors'
  (``paper``, with their attention dropout of 0.1 unless ``attention_dropout`` says otherwise);
  both train in this same loop (the authors' training code is not public). ``initial`` starts
  from given weights instead (e.g. the authors' checkpoint, fine-tuned on a site's photos).
* **Early stopping** on validation mAP of the fused ranking (aggregator + learned λ); the state
  of the best epoch is kept and saved. The reference is the method's untrained default, mean
  pooling with λ = 0.5 (``baseline_val_map``); when no epoch beats it, ``TrainResult.improved``
  is False and the CLI says so: the product should then keep the mean fallback.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .aggregator import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    PAPER_ATTENTION_DROPOUT,
    AggregatorConfig,
    ProxyAggregator,
    aggregate,
    build_aggregator,
    mean_pool,
    save_aggregator,
)
from .fusion import fused_scores
from .metrics import RECALL_LEVELS, interpolated_precision, mean_average_precision
from .pr_plot import save_pr_curves

__all__ = [
    "FeatureSet",
    "load_features",
    "save_features",
    "split_categories",
    "subset_categories",
    "TrainConfig",
    "EpochLog",
    "TrainResult",
    "train_aggregator",
    "add_architecture_arguments",
    "text_mean_metadata",
    "fused_map",
    "compare_methods",
    "precision_recall_curves",
    "format_table",
    "main",
]


# ----------------------------------------------------------------------------- feature files


@dataclass
class FeatureSet:
    """The contents of one feature file (see the module docstring for the meaning of each array)."""

    proxy_features: np.ndarray
    text_features: np.ndarray
    category_names: np.ndarray
    db_vlm: np.ndarray
    db_vision: np.ndarray
    db_labels: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proxy_features = np.asarray(self.proxy_features, dtype=np.float32)
        self.text_features = np.asarray(self.text_features, dtype=np.float32)
        self.category_names = np.asarray(self.category_names, dtype=str)
        self.db_vlm = np.asarray(self.db_vlm, dtype=np.float32)
        self.db_vision = np.asarray(self.db_vision, dtype=np.float32)
        self.db_labels = np.asarray(self.db_labels, dtype=np.int64)
        self.validate()

    @property
    def n_categories(self) -> int:
        return self.proxy_features.shape[0]

    def validate(self) -> None:
        """Raise ValueError when the arrays do not fit together."""
        if self.proxy_features.ndim != 3:
            raise ValueError(f"proxy_features must be (C, K, Dv), got {self.proxy_features.shape}")
        c, _, dv = self.proxy_features.shape
        n = self.db_labels.shape[0]
        checks = [
            (self.text_features.ndim == 2 and self.text_features.shape[0] == c, "text_features (C, Dt)"),
            (self.category_names.shape == (c,), "category_names (C,)"),
            (self.db_labels.ndim == 1, "db_labels (N,)"),
            (self.db_vlm.shape == (n, self.text_features.shape[-1]), "db_vlm (N, Dt)"),
            (self.db_vision.shape == (n, dv), "db_vision (N, Dv)"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"feature arrays do not fit together: expected {what}")
        if n and (self.db_labels.min() < 0 or self.db_labels.max() >= c):
            raise ValueError(f"db_labels must lie in [0, {c})")


def save_features(path: str | Path, features: FeatureSet) -> None:
    """Write a feature file (uncompressed .npz; loads without pickle)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        proxy_features=features.proxy_features,
        text_features=features.text_features,
        category_names=features.category_names,
        db_vlm=features.db_vlm,
        db_vision=features.db_vision,
        db_labels=features.db_labels,
        metadata=np.array(json.dumps(features.metadata, sort_keys=True)),
    )


def load_features(path: str | Path) -> FeatureSet:
    """Read a feature file written by :func:`save_features` (extra keys are ignored)."""
    with np.load(path, allow_pickle=False) as data:
        metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
        return FeatureSet(
            proxy_features=data["proxy_features"],
            text_features=data["text_features"],
            category_names=data["category_names"],
            db_vlm=data["db_vlm"],
            db_vision=data["db_vision"],
            db_labels=data["db_labels"],
            metadata=metadata,
        )


def split_categories(n_categories: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded category split -> (train indices, validation indices), both sorted and non-empty."""
    if n_categories < 2:
        raise ValueError("need at least 2 categories to split into train and validation")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = min(n_categories - 1, max(1, round(val_fraction * n_categories)))
    perm = np.random.default_rng(seed).permutation(n_categories)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def subset_categories(features: FeatureSet, categories: np.ndarray) -> FeatureSet:
    """The categories ``categories`` and only their photos, labels renumbered 0..len-1.

    Used to hold a test split out of training entirely (train's own split then cuts the rest
    into train and validation).
    """
    cats = np.asarray(categories, dtype=np.int64)
    remap = np.full(features.n_categories, -1, dtype=np.int64)
    remap[cats] = np.arange(len(cats))
    keep = remap[features.db_labels] >= 0
    return FeatureSet(
        proxy_features=features.proxy_features[cats],
        text_features=features.text_features[cats],
        category_names=features.category_names[cats],
        db_vlm=features.db_vlm[keep],
        db_vision=features.db_vision[keep],
        db_labels=remap[features.db_labels[keep]],
        metadata=dict(features.metadata),
    )


# ----------------------------------------------------------------------------- evaluation


def _fused(features: FeatureSet, categories: np.ndarray, queries: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positives) of the fused ranking of the whole database for the given categories."""
    cats = np.asarray(categories)
    scores = fused_scores(features.text_features[cats], queries, lam, features.db_vlm, features.db_vision)
    return scores, features.db_labels[None, :] == cats[:, None]


def fused_map(features: FeatureSet, categories: np.ndarray, queries: np.ndarray, lam: float) -> float:
    """mAP of the fused ranking of the whole database for the given categories.

    ``queries`` are the (len(categories), Dv) proxy query vectors q of those categories.
    """
    return mean_average_precision(*_fused(features, categories, queries, lam))


def _methods(
    features: FeatureSet, cats: np.ndarray, net: ProxyAggregator | None, lam: float
) -> list[tuple[str, np.ndarray | None, float]]:
    """The rows of the comparison: (label, proxy query vectors or None when there is no
    network, λ)."""
    mean_q = mean_pool(features.proxy_features[cats])
    rows: list[tuple[str, np.ndarray | None, float]] = [
        ("text only (λ=0)", mean_q, 0.0),
        ("proxies only (mean, λ=1)", mean_q, 1.0),
        (f"text + mean proxies (λ={lam:.2f})", mean_q, lam),
    ]
    if net is None:
        rows.append(("text + aggregator (learned λ)", None, 0.0))
    else:
        agg_q = aggregate(features.proxy_features[cats], net)
        rows.append(("proxies only (aggregator, λ=1)", agg_q, 1.0))
        rows.append((f"text + aggregator (learned λ={net.lam():.2f})", agg_q, net.lam()))
    return rows


def compare_methods(
    features: FeatureSet,
    categories: np.ndarray | None = None,
    net: ProxyAggregator | None = None,
    lam: float = 0.5,
) -> list[tuple[str, float | None]]:
    """The METHOD.md comparison table on ``categories`` (default: all): (row label, mAP or None).

    Rows: text only (λ=0); proxies only with mean pooling (λ=1); text + mean proxies fused at
    ``lam``; and, with a trained ``net``, proxies only through the aggregator and text +
    aggregator fused at the learned λ (None when there is no network).
    """
    cats = np.arange(features.n_categories) if categories is None else np.asarray(categories)
    return [(label, None if q is None else fused_map(features, cats, q, row_lam))
            for label, q, row_lam in _methods(features, cats, net, lam)]


def precision_recall_curves(
    features: FeatureSet,
    categories: np.ndarray | None = None,
    net: ProxyAggregator | None = None,
    lam: float = 0.5,
    recall_levels: np.ndarray = RECALL_LEVELS,
) -> list[tuple[str, np.ndarray]]:
    """For each row of :func:`compare_methods` that has a value: (label, precision at
    ``recall_levels``), the interpolated precision averaged over the categories, as the table
    averages AP over them."""
    cats = np.arange(features.n_categories) if categories is None else np.asarray(categories)
    curves = []
    for label, q, row_lam in _methods(features, cats, net, lam):
        if q is not None:
            precision = interpolated_precision(*_fused(features, cats, q, row_lam), recall_levels)
            curves.append((label, np.nanmean(precision[~np.isnan(precision).all(axis=1)], axis=0)))
    return curves


def format_table(rows: Sequence[tuple[str, float | None]], title: str = "mAP") -> str:
    """A markdown table of (label, mAP) rows; None prints as the no-aggregator note."""
    lines = [f"| method | {title} |", "|---|---|"]
    for label, value in rows:
        cell = "n/a: no trained aggregator" if value is None else f"{value:.4f}"
        lines.append(f"| {label} | {cell} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_aggregator` (defaults suit a few hundred categories)."""

    val_fraction: float = 0.2
    epochs: int = 60
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 256
    temperature: float = 0.05
    patience: int = 10
    layers: int = 2
    seed: int = 0
    vision_model: str = ""
    # "photo": softmax over categories per photo (METHOD.md's loss); "query": softmax over the
    # batch's photos per query; "both": their mean (default). The photo direction alone is blind
    # to any component shared by all queries (it cancels in a softmax over categories) although
    # that component shifts every photo's score in a ranking; the query direction sees it.
    loss: str = "both"
    # Probability of switching each proxy off per step (at least one stays): the product lets
    # users drop proxies, and it discourages memorising the training categories' proxy sets.
    proxy_dropout: float = 0.0
    # "cletir" or "paper" (retrieval.engine.aggregator); see README "Where cletir differs".
    architecture: str = DEFAULT_ARCHITECTURE
    # Attention dropout while training; None: the architecture's recipe (paper 0.1, cletir 0).
    attention_dropout: float | None = None

    def network_config(self, dim: int) -> AggregatorConfig:
        """The config of the network this training builds for ``dim``-d vision features."""
        dropout = self.attention_dropout
        if dropout is None:
            dropout = PAPER_ATTENTION_DROPOUT if self.architecture == "paper" else 0.0
        return AggregatorConfig(
            dim=dim, layers=self.layers, vision_model=self.vision_model,
            architecture=self.architecture, attention_dropout=dropout,
        )


@dataclass
class EpochLog:
    epoch: int
    loss: float
    lam: float
    val_map: float
    seconds: float


@dataclass
class TrainResult:
    net: ProxyAggregator  # the best-epoch network, in eval mode
    best_epoch: int
    best_val_map: float
    baseline_val_map: float  # mean pooling, λ = 0.5: the untrained default of the method
    history: list[EpochLog]
    train_categories: np.ndarray
    val_categories: np.ndarray

    @property
    def improved(self) -> bool:
        """Whether the trained network beats mean pooling + λ=0.5 on the validation categories."""
        return self.best_val_map > self.baseline_val_map


def _loss(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor, kind: str) -> torch.Tensor:
    # logits (b, C): fused score of every training query for every photo in the batch.
    photo_ce = F.cross_entropy(logits, labels, weight=class_weight)
    if kind == "photo":
        return photo_ce
    pos = F.one_hot(labels, logits.shape[1]).T.bool()  # (C, b)
    has = pos.any(dim=1)
    logp = logits.T.log_softmax(dim=1)  # each query: softmax over the photos of the batch
    query_ce = -(logp * pos).sum(dim=1)[has] / pos.sum(dim=1)[has]
    query_ce = query_ce.mean()
    if kind == "query":
        return query_ce
    return 0.5 * (photo_ce + query_ce)


def _dropout_mask(shape: torch.Size, p: float, gen: torch.Generator) -> torch.Tensor | None:
    """Randomly switch proxies off (keeping at least one per category), or None when p = 0."""
    if p <= 0.0:
        return None
    draw = torch.rand(shape, generator=gen)
    keep = draw >= p
    keep[torch.arange(shape[0]), draw.argmax(dim=1)] = True
    return keep


def _validation_map(net: ProxyAggregator, features: FeatureSet, val_cats: np.ndarray) -> float:
    return fused_map(features, val_cats, aggregate(features.proxy_features[val_cats], net), net.lam())


def train_aggregator(
    features: FeatureSet,
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
    initial: ProxyAggregator | None = None,
) -> TrainResult:
    """Train an aggregation network and its w on the training categories of ``features``.

    The network is a new one of ``config.architecture``, or a copy of ``initial`` (whose own
    architecture and config then apply; the original is left untouched). ``log`` receives one
    line per epoch (None = silent). Returns the best-epoch network.
    """
    cfg = config or TrainConfig()
    dim = features.proxy_features.shape[-1]
    if initial is not None and initial.dim != dim:
        raise ValueError(f"the initial network is {initial.dim} wide, the proxy features are {dim}-d")
    train_cats, val_cats = split_categories(features.n_categories, cfg.val_fraction, cfg.seed)

    # Training data: only photos of training categories, labels remapped to 0..C_train-1.
    remap = np.full(features.n_categories, -1, dtype=np.int64)
    remap[train_cats] = np.arange(len(train_cats))
    photo_idx = np.flatnonzero(remap[features.db_labels] >= 0)
    if len(photo_idx) == 0:
        raise ValueError("no database photo belongs to a training category")
    y_all = torch.from_numpy(remap[features.db_labels[photo_idx]])
    vlm_all = torch.from_numpy(features.db_vlm[photo_idx])
    vis_all = torch.from_numpy(features.db_vision[photo_idx])
    proxies = torch.from_numpy(features.proxy_features[train_cats])
    texts = torch.from_numpy(features.text_features[train_cats])
    counts = torch.bincount(y_all, minlength=len(train_cats)).float()
    class_weight = torch.where(counts > 0, 1.0 / counts.clamp(min=1.0), torch.zeros_like(counts))
    class_weight = class_weight * (counts > 0).sum() / class_weight.sum()

    torch.manual_seed(cfg.seed)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    net = build_aggregator(cfg.network_config(dim)) if initial is None else copy.deepcopy(initial)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))
    # No weight decay on w and the temperature: decaying w would pull λ towards 0.5 for no reason.
    decay = [p for p in net.parameters() if p is not net.fusion_logit]
    optim = torch.optim.Adam(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": [net.fusion_logit, log_scale], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )

    baseline = fused_map(features, val_cats, mean_pool(features.proxy_features[val_cats]), 0.5)
    untrained = _validation_map(net.eval(), features, val_cats)
    history = [EpochLog(0, float("nan"), net.lam(), untrained, 0.0)]
    if log:
        log(f"baseline   mean pooling, λ=0.50               val mAP {baseline:.4f}")
        origin = "untrained" if initial is None else "initial"
        log(f"epoch   0  {origin} {net.config.architecture} network, λ={net.lam():.2f}  val mAP {untrained:.4f}")
    # Only trained epochs are candidates: METHOD.md forbids serving the untrained network.
    best_map, best_epoch, best_state = -1.0, 0, copy.deepcopy(net.state_dict())
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        net.train()
        perm = torch.randperm(len(photo_idx), generator=order_gen)
        total, seen = 0.0, 0
        for batch in perm.split(cfg.batch_size):
            q = net(proxies, _dropout_mask(proxies.shape[:2], cfg.proxy_dropout, order_gen))
            lam = torch.sigmoid(net.fusion_logit)
            scores = (1.0 - lam) * (vlm_all[batch] @ texts.T) + lam * (vis_all[batch] @ q.T)
            loss = _loss(scores * log_scale.exp(), y_all[batch], class_weight, cfg.loss)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                log_scale.clamp_(max=math.log(100.0))  # CLIP's cap: keeps the softmax finite
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        val = _validation_map(net.eval(), features, val_cats)
        history.append(EpochLog(epoch, total / seen, net.lam(), val, time.perf_counter() - start))
        improved = val > best_map
        if improved:
            best_map, best_epoch, best_state, stale = val, epoch, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
        if log:
            log(
                f"epoch {epoch:3d}  loss {total / seen:.4f}  λ {net.lam():.3f}  "
                f"val mAP {val:.4f}{'  *' if improved else ''}"
            )
        if stale >= cfg.patience:
            if log:
                log(f"early stop: no val mAP gain for {cfg.patience} epochs")
            break

    net.load_state_dict(best_state)
    return TrainResult(net.eval(), best_epoch, best_map, baseline, history, train_cats, val_cats)


# ----------------------------------------------------------------------------- CLI


def add_architecture_arguments(parser: argparse.ArgumentParser) -> None:
    """``--architecture`` and ``--attention-dropout``, shared with ``manage.py train_aggregator``."""
    parser.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        default=DEFAULT_ARCHITECTURE,
        help="cletir's network or the authors' (paper); README: where cletir differs from the paper",
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help=f"attention dropout while training (default: {PAPER_ATTENTION_DROPOUT} for paper, 0 for cletir)",
    )


def text_mean_metadata(features: FeatureSet) -> dict[str, str]:
    """The text convention the features were made with, for the saved network's metadata:
    a network is meant to be used with the convention it was trained on."""
    text_mean = features.metadata.get("text_mean")
    return {"text_mean": str(text_mean)} if text_mean else {}


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m retrieval.engine.train",
        description="Train the proxy aggregator and fusion weight on a feature file (.npz).",
    )
    p.add_argument("features", type=Path, help="feature file written by retrieval.engine.evaluate")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors path")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--temperature", type=float, default=d.temperature, help="initial softmax temperature")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (epochs)")
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--loss", choices=("both", "photo", "query"), default=d.loss)
    p.add_argument("--proxy-dropout", type=float, default=d.proxy_dropout)
    add_architecture_arguments(p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pr-curves", type=Path, default=None,
                   help="write the validation precision-recall curves here (PNG; default: beside --out, "
                        "named <out>-precision-recall.png)")
    p.add_argument(
        "--vision-model",
        default=None,
        help="vision encoder id to record in the file (default: from the feature file's metadata)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    features = load_features(args.features)
    vision_model = args.vision_model or str(features.metadata.get("vision_model", ""))
    config = TrainConfig(
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        temperature=args.temperature,
        patience=args.patience,
        layers=args.layers,
        loss=args.loss,
        proxy_dropout=args.proxy_dropout,
        seed=args.seed,
        vision_model=vision_model,
        architecture=args.architecture,
        attention_dropout=args.attention_dropout,
    )
    print(
        f"{features.n_categories} categories ({features.proxy_features.shape[1]} proxies each), "
        f"{len(features.db_labels)} photos; seed {args.seed}"
    )
    result = train_aggregator(features, config, log=lambda line: print(line, flush=True))
    save_aggregator(
        result.net,
        args.out,
        extra_metadata={
            "best_epoch": str(result.best_epoch),
            "val_map": f"{result.best_val_map:.6f}",
            "baseline_val_map": f"{result.baseline_val_map:.6f}",
            "train_categories": json.dumps(features.category_names[result.train_categories].tolist()),
            "seed": str(args.seed),
            **text_mean_metadata(features),
        },
    )
    print(f"\nbest epoch {result.best_epoch} ({result.net.config.architecture} architecture); saved {args.out}")
    if not result.improved:
        print(
            f"WARNING: the trained aggregator ({result.best_val_map:.4f}) does not beat mean pooling "
            f"with λ=0.5 ({result.baseline_val_map:.4f}) on validation; keep the mean fallback."
        )
    print(
        f"\nValidation: {len(result.val_categories)} held-out categories, "
        f"database = all {len(features.db_labels)} photos\n"
    )
    rows = compare_methods(features, result.val_categories, result.net)
    print(format_table(rows))
    curves = save_pr_curves(args.pr_curves or args.out.with_name(f"{args.out.stem}-precision-recall.png"),
                            precision_recall_curves(features, result.val_categories, result.net),
                            f"validation: {len(result.val_categories)} held-out categories", maps=dict(rows))
    print(f"\nprecision-recall curves: {curves.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
