"""A query's recipe, and the one way its inputs are gathered in a space.

What a query vector is made from (text, seed and K of the proxies, the proxies kept, λ, example
photos, negatives, uploaded examples) is a `QueryRecipe`. `gather_inputs` turns a recipe into
the plan's `QueryInputs` in a space: the text vector, the proxies (the proxy cache, generated
when missing), the example photos and the negatives encoded. A search runs it when it runs
(`runner`); a saved album runs it again when a new space starts serving
(`retrieval.albums.derive`), so the album's vector in the new space is the vector the search
would make there.

The caller says how each step is timed and reported (`InputSteps`): a search times stages into
its timings, writes progress and keeps the proxy cache private (`cache_privacy`); an album's
re-derivation in the background needs none of that.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from django.conf import settings

from retrieval.engine.seeds import proxy_seeds

from ..models import EmbeddingSpace, ProxySet
from .inputs import asset_vision_vectors, encode_files, space_aggregator
from .plan import QueryInputs, QueryPlan, plan_query
from .proxies import proxy_features
from .query import normalise_query

NO_QUERY = "A search needs a text or at least one example photo."


class RecipeError(ValueError):
    """A recipe that makes no query; the message is shown to the user."""


@dataclass(frozen=True)
class QueryRecipe:
    """What a query vector is made from. Example and negative photos are the ones the user may
    see now (the caller reads them with the user's access); files are paths of uploads."""

    text: str
    seed: int
    k: int
    text_only: bool = False
    disabled_proxies: Sequence[int] = ()
    lambda_override: float | None = None
    negative_text: str = ""
    positive_assets: Sequence = ()
    negative_assets: Sequence = ()
    positive_files: Sequence[str] = ()
    negative_files: Sequence[str] = field(default=())

    def seeds(self) -> list[int]:
        return proxy_seeds(self.seed, self.k)


class InputSteps(Protocol):
    """How the caller times, reports and fetches the parts of a query."""

    def stage(self, name: str) -> AbstractContextManager: ...

    def progress(self, value: int, **fields) -> None: ...

    def text_vector(self, space: EmbeddingSpace, text: str) -> np.ndarray: ...

    def proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet: ...

    def negative_proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet: ...


def gather_inputs(space: EmbeddingSpace, recipe: QueryRecipe, steps: InputSteps) -> QueryInputs:
    """The plan's inputs of `recipe` in `space` (text vector, proxies, examples, negatives)."""
    text = normalise_query(recipe.text)
    images = not recipe.text_only  # λ = 0 switches the image half off: read none of it
    positives = list(recipe.positive_assets) if images else []
    positive_files = list(recipe.positive_files) if images else []
    if not text and not (positives or positive_files):
        raise RecipeError(NO_QUERY)
    t = None
    if text:
        with steps.stage("text"):
            t = steps.text_vector(space, text)
    steps.progress(15)
    proxies = enabled = None
    if text and images:
        proxy_set = steps.proxy_set(space, text, recipe.seeds())
        steps.progress(55, proxy_set=proxy_set)
        proxies = proxy_features(proxy_set)
        disabled = set(recipe.disabled_proxies)
        enabled = np.array([i not in disabled for i in range(len(proxies))])
    examples = None
    if positives or positive_files:
        with steps.stage("examples"):
            examples = np.array(asset_vision_vectors(space, positives) + encode_files(space, positive_files))
    negatives = _negative_vectors(space, recipe, steps) if images else None
    steps.progress(65)
    return QueryInputs(vlm_dim=space.vlm_dim, vision_dim=space.vision_dim, text_vector=t, proxies=proxies,
                       proxy_enabled=enabled, examples=examples, negatives=negatives,
                       lambda_override=recipe.lambda_override)


def plan_in_space(space: EmbeddingSpace, inputs: QueryInputs) -> QueryPlan:
    """The query plan of `inputs` with the space's trained aggregator (when it has image
    tokens to aggregate) and the site's λ and negative weight."""
    net = space_aggregator(space) if inputs.has_image_tokens else None
    return plan_query(inputs, net, settings.CLETIR_FUSION_LAMBDA, settings.CLETIR_NEGATIVE_WEIGHT)


def _negative_vectors(space: EmbeddingSpace, recipe: QueryRecipe, steps: InputSteps) -> np.ndarray | None:
    """Vision vectors of everything the user marked as "not this"."""
    photos, files = list(recipe.negative_assets), list(recipe.negative_files)
    negative_text = normalise_query(recipe.negative_text)
    if not (photos or files or negative_text):
        return None
    with steps.stage("negatives"):
        vectors = asset_vision_vectors(space, photos) + encode_files(space, files)
        if negative_text:
            negative_set = steps.negative_proxy_set(space, negative_text, recipe.seeds())
            steps.progress(65, negative_proxy_set=negative_set)
            vectors += list(proxy_features(negative_set))
    return np.array(vectors)
