"""How many photos of a search's scope match: the mixture fitted on the scope's scores, and an
exact count and cutoff.

The stored results are the top N only; the match estimate (`retrieval.search.cutoff`) needs
the whole score distribution. It is fitted on a histogram of the scope's fast scores: the
memory backend's from the very pass that ranked (no second scan), pgvector's from one scan of
the scope. The fit gives a threshold score; the matches are the photos whose *exact* score
(`retrieval.search.scores`) is above it, counted exactly (`ranking.exact.exact_count`), and the
cutoff is the lowest of those exact scores. So `score >= match_cutoff` holds for exactly
`match_count` photos of the scope, the stored results' ranks 1..match_count among them, and an
album saved from the search takes the same photos.

The estimate is stored with the scope's histogram in a few bins and the fitted components, so
the search page draws the cutoff (`retrieval.search.score_chart`) from the stored row.
"""
from __future__ import annotations

import time

import numpy as np
from django.conf import settings

from ..models import EmbeddingSpace, Search
from .cutoff import DISPLAY_BINS, HISTOGRAM_BINS, MatchEstimate, fit_mixture
from .ranking import Ranking
from .ranking.exact import exact_count
from .scores import above_float32

# Text parts of this many top-ranked photos stand in for the text part of an on-category photo
# when the proxies (which have only vision features) give the category hint.
HINT_TOP_ROWS = 10


def query_bytes(u: np.ndarray) -> bytes:
    return np.asarray(u, dtype="<f4").tobytes()


def query_from_bytes(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype="<f4").copy()


def category_hint(u: np.ndarray, space: EmbeddingSpace, references: list[np.ndarray],
                  text_parts: np.ndarray) -> float | None:
    """A fused score an on-category photo is expected to reach: the proxies' (and example
    photos') image part λ<q, g_k>, plus the mean text part of the top-ranked photos (their
    `text_parts`, best first; proxies have no VLM features of their own). None without
    references."""
    if not references:
        return None
    image_part = float(np.mean(np.stack(references).astype(np.float64) @ np.asarray(u[space.vlm_dim:], dtype=np.float64)))
    top = np.asarray(text_parts[:HINT_TOP_ROWS], dtype=np.float64)
    return image_part + (float(top.mean()) if top.size else 0.0)


def estimate_scope_matches(space: EmbeddingSpace, u: np.ndarray, ranking: Ranking,
                           references: list[np.ndarray], posterior: float) -> tuple[MatchEstimate, int]:
    """(The match estimate over the ranking's whole scope, the photos in scope)."""
    scores = ranking.scope_scores()
    histogram = scores.histogram(HISTOGRAM_BINS)
    fit = fit_mixture(histogram, category_hint(u, space, references, ranking.parts.text))
    count, cutoff = 0, None
    if fit is not None:
        count, cutoff = exact_count(scores, fit.threshold(posterior, histogram.low, histogram.high), u, space.vlm_dim)
    if cutoff is None:  # no match: a cutoff above the best photo
        cutoff = above_float32(ranking.scores[0] if len(ranking.scores) else 0.0)
    mean, std = histogram.mean_std() if histogram.n else (0.0, 0.0)
    background, category, weight = ((mean, std), (mean, std), 0.0) if fit is None else (fit.background, fit.category, fit.weight)
    estimate = MatchEstimate(count=count, cutoff=float(cutoff), background_mean=background[0],
                             background_std=background[1], category_mean=category[0], category_std=category[1],
                             category_weight=weight, histogram=histogram.coarsened(DISPLAY_BINS))
    return estimate, scores.size


def record_matches(search: Search, space: EmbeddingSpace, u: np.ndarray, ranking: Ranking,
                   references: list[np.ndarray], timings: dict | None = None) -> MatchEstimate:
    """Estimate the search's matches over its whole scope and store them on the search (with
    `timings`, when given, in the same write: the count's own seconds go in as "matches")."""
    started = time.perf_counter()
    estimate, photos = estimate_scope_matches(space, u, ranking, references, settings.CLETIR_MATCH_POSTERIOR)
    if timings is not None:
        timings = {**timings, "matches": round(time.perf_counter() - started, 6)}
    search.record_matches(estimate.count, estimate.cutoff, {**estimate.as_dict(), "photos": int(photos)}, timings)
    return estimate
