"""How many photos of a search's scope match: scores of every photo in scope, and the estimate.

The stored results are the top N only; the match estimate (`retrieval.search.cutoff`) needs the whole
score distribution, so Postgres computes the fused score of every photo in scope with one
exact scan that returns (asset id, score) pairs and no vectors (~60 ms per 100k photos,
ARCHITECTURE.md). Scores are computed in single precision against the float32 query, as
`numpy` does with the stored half-precision vectors, so a cutoff read here means the same
thing to `retrieval.albums` when it scores a newly indexed photo.
"""
from __future__ import annotations

import numpy as np
from django.conf import settings

from ..models import EmbeddingSpace, Search
from ..vector_params import VectorParam, binary_cursor
from .cutoff import MatchEstimate, estimate_matches
from .ranking import scope_params, scope_sql

# Text parts of this many top-ranked photos stand in for the text part of an on-category photo
# when the proxies (which have only vision features) give the category hint.
HINT_TOP_ROWS = 10


def query_bytes(u: np.ndarray) -> bytes:
    return np.asarray(u, dtype="<f4").tobytes()


def query_from_bytes(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype="<f4").copy()


def scope_scores(space: EmbeddingSpace, u: np.ndarray, library_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(asset ids, fused scores <u, e(x)>) of every photo of the libraries in the space
    (failed photos excluded), in no particular order."""
    if not library_ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    # halfvec -> vector widens the stored values exactly; `<#>` is the negative inner product.
    sql = f"SELECT e.asset_id, -(e.vector::vector <#> %(query)s::vector) {scope_sql(space)}"
    with binary_cursor() as cursor:
        cursor.execute(sql, {"query": VectorParam(np.asarray(u, dtype=np.float32), half=False),
                             **scope_params(library_ids)}, binary=True)
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    ids, scores = zip(*rows)
    return np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float64)


def category_hint(u: np.ndarray, space: EmbeddingSpace, references: list[np.ndarray], rows: list) -> float | None:
    """A fused score an on-category photo is expected to reach: the proxies' (and example
    photos') image part λ<q, g_k>, plus the mean text part of the top-ranked photos (proxies
    have no VLM features of their own). None without references."""
    if not references:
        return None
    image_part = float(np.mean(np.stack(references).astype(np.float64) @ np.asarray(u[space.vlm_dim:], dtype=np.float64)))
    text_part = float(np.mean([r.text_score for r in rows[:HINT_TOP_ROWS]])) if rows else 0.0
    return image_part + text_part


def record_matches(search: Search, space: EmbeddingSpace, u: np.ndarray, library_ids: list[int],
                   rows: list, references: list[np.ndarray]) -> MatchEstimate:
    """Estimate the search's matches over its whole scope and store them on the search."""
    _, scores = scope_scores(space, u, library_ids)
    estimate = estimate_matches(scores, category_hint(u, space, references, rows), settings.CLETIR_MATCH_POSTERIOR)
    search.record_matches(estimate.count, estimate.cutoff, {**estimate.as_dict(), "photos": int(scores.size)})
    return estimate
