"""The query plan: from a search's inputs to the one vector it is ranked by (METHOD.md 1-5).

Pure: numpy and the engine's aggregation, no database and no model to load, so every mode can
be tested on planted vectors. The runner gathers the inputs (text vector, proxy features,
example photos, negatives) and calls `plan_query`.

How the query vector is made, per mode:

* text search: t = T(text) over the 80 CLIP templates; the proxies g_k (cached or generated; a
  refinement reuses its parent's set); q = the space's trained aggregator over the active
  proxies, else their mean; λ = the search's override, else the trained λ, else the site's
  default (CLETIR_FUSION_LAMBDA).
* text only: the runner gathers no image inputs, so λ = 0 and u = [t; 0].
* by example (no text): q from the example photos alone, λ = 1, no text branch.
* refining: switched-off proxies are masked out of the aggregation; positive example photos join
  the proxies as extra tokens; negatives (photos, uploads, and the proxies of a "not ..." text) are
  averaged into n and the image query becomes q' = normalize(q - β n), β = CLETIR_NEGATIVE_WEIGHT.
  Every proxy switched off and no example: nothing is left of the image half, λ = 0.

  Why subtract instead of a second query: <q', V(x)> = (<q, V(x)> - β<n, V(x)>) / |q - βn|
  pushes every photo down in proportion to its similarity to the negatives, and the ranking stays
  ONE inner-product search. Re-normalising keeps q' a unit vector, so λ keeps its meaning (the
  balance of the text and image halves).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.engine.aggregator import aggregate, fusion_lambda
from retrieval.engine.fusion import query_vector

MEAN, TRAINED, NONE = "mean", "trained", "none"


@dataclass(frozen=True)
class QueryInputs:
    """What a search's query vector is made from (vision vectors are unit rows of width
    `vision_dim`; empty arrays where a part is absent)."""

    vlm_dim: int
    vision_dim: int
    text_vector: np.ndarray | None = None  # t; None: the search has no text
    proxies: np.ndarray | None = None  # (K, D) proxy features g_k
    proxy_enabled: np.ndarray | None = None  # (K,) bool: proxies the user kept
    examples: np.ndarray | None = None  # (E, D) positive example photos
    negatives: np.ndarray | None = None  # (N, D) everything marked "not this"
    lambda_override: float | None = None

    @property
    def has_image_tokens(self) -> bool:
        """Whether there is anything to aggregate (proxies or example photos)."""
        return self.proxies is not None and len(self.proxies) > 0 or self.examples is not None and len(self.examples) > 0

    def rows(self, value: np.ndarray | None) -> np.ndarray:
        if value is None or len(value) == 0:
            return np.zeros((0, self.vision_dim), dtype=np.float32)
        return np.asarray(value, dtype=np.float32).reshape(-1, self.vision_dim)


@dataclass(frozen=True)
class QueryPlan:
    u: np.ndarray  # [(1-λ)t; λq], float32, length vlm_dim + vision_dim
    lam: float
    aggregation: str  # MEAN, TRAINED or NONE (no image half)
    references: np.ndarray  # the active positive tokens (proxies kept + examples): where on-category photos sit


def plan_query(inputs: QueryInputs, aggregator=None, default_lambda: float = 0.5,
               negative_weight: float = 0.5) -> QueryPlan:
    """The query vector of `inputs`; `aggregator` is the space's trained network or None."""
    proxies, examples = inputs.rows(inputs.proxies), inputs.rows(inputs.examples)
    enabled = (np.ones(len(proxies), dtype=bool) if inputs.proxy_enabled is None
               else np.asarray(inputs.proxy_enabled, dtype=bool))
    tokens = np.concatenate([proxies, examples])
    active = np.concatenate([enabled, np.ones(len(examples), dtype=bool)])
    q, aggregation = np.zeros(inputs.vision_dim, dtype=np.float32), NONE
    if active.any():
        q = aggregate(tokens, aggregator, active)
        negatives = inputs.rows(inputs.negatives)
        if len(negatives):
            q = _normalised(q - negative_weight * _normalised(negatives.mean(axis=0)))
        aggregation = TRAINED if aggregator is not None else MEAN
    has_text = inputs.text_vector is not None
    lam = _fusion_lambda(inputs.lambda_override, has_text, aggregation != NONE, aggregator, default_lambda)
    t = inputs.text_vector if has_text else np.zeros(inputs.vlm_dim, dtype=np.float32)
    return QueryPlan(u=query_vector(t, q, lam), lam=lam, aggregation=aggregation, references=tokens[active])


def _fusion_lambda(override: float | None, has_text: bool, has_images: bool, aggregator, default: float) -> float:
    if not has_images:
        return 0.0  # text only, or every proxy switched off with no example photo
    if not has_text:
        return 1.0  # by example: there is no text branch
    if override is not None:
        return float(override)
    return fusion_lambda(aggregator, default=default)


def _normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / max(norm, 1e-12)).astype(np.float32)
