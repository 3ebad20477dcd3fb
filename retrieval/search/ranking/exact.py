"""From a fast pass to exact answers: the top N, the match count, an album's members, the
photos around a cutoff.

A fast pass (fp16 matrix products in memory, pgvector's float32 loops) scores every photo of a
scope within a known `error` of its exact score (`retrieval.search.scores`). Exact scores are
computed for the photos whose place the error could change, and only for them:

* the top N: the best candidates by fast score, enough of them that no photo outside could
  reach the N-th exact score (more are taken when one could);
* a match count (photos whose exact score is above a threshold): the photos within the error
  of the threshold;
* an album's members (exact score >= its cutoff) and an audit's neighbours of the cutoff.

Every answer is what scoring every photo exactly would give, ties included (score descending,
then asset id ascending). Pure numpy, no Django.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..scores import ScoreParts, exact_parts
from .base import ScopeScores

# Float64 sums of a few error terms are off by far less than this; added wherever a bound is
# compared, so the comparison errs on the side of scoring more photos exactly.
TINY = 1e-12

Fetch = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _ulp(value: float) -> float:
    """The float32 spacing at `value` (at least the smallest normal one's)."""
    return float(np.spacing(np.float32(max(abs(value), 1e-30))))


def ranked(query: np.ndarray, split: int, asset_ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, ScoreParts]:
    """These photos and their exact parts, best first (score desc, asset id asc)."""
    parts = exact_parts(query, vectors, split)
    asset_ids = np.asarray(asset_ids, dtype=np.int64)
    order = np.lexsort((asset_ids, -parts.score.astype(np.float64)))
    return asset_ids[order], ScoreParts(parts.text[order], parts.image[order])


def exact_top(fetch: Fetch, size: int, first: int, error: float | None, query: np.ndarray, split: int,
              top_n: int) -> tuple[np.ndarray, ScoreParts]:
    """The exact top `top_n` of a scope of `size` photos: (asset ids, parts), best first.

    `fetch(m)` gives the `m` best photos by fast score, best first: (asset ids, fast scores,
    float16 vectors). `first` is how many to fetch first; `error=None` means the fast order is
    not bounded (an approximate index): the fetched photos are ranked exactly, nothing more.
    """
    n = min(top_n, size)
    m = min(size, max(first, n))
    while True:
        asset_ids, fast, vectors = fetch(m)
        ids, parts = ranked(query, split, asset_ids, vectors)
        n = min(n, len(ids))
        done = error is None or len(ids) < m or m >= size
        # A photo not fetched scores at most fast[-1] + error, exactly; its exact float32 score
        # must stay below the n-th one (a tie would let the asset id decide) or more are needed.
        if done or n == 0 or _f32(float(fast[-1]) + error + TINY) < parts.score[n - 1]:
            return ids[:n], ScoreParts(parts.text[:n], parts.image[:n])
        m = min(size, 2 * m)


def exact_count(scores: ScopeScores, threshold: float, query: np.ndarray, split: int) -> tuple[int, np.float32 | None]:
    """(How many photos score more than `threshold` exactly, the lowest such exact score);
    (0, None) when none does. `threshold` must be finite."""
    if not np.isfinite(threshold):
        raise ValueError(f"a match threshold must be finite, got {threshold}")
    error = scores.error
    low = threshold - error - 2 * _ulp(threshold) - TINY  # below it: exact float32 <= threshold
    width = 4 * error + 4 * _ulp(threshold)
    while True:
        high = threshold + width
        ids, vectors = scores.photos(scores.select(low, high))
        exact = exact_parts(query, vectors, split).score.astype(np.float64)
        matches = exact[exact > threshold]
        above = scores.count_above(high)
        # Every photo above the window scores at least this exactly: all matches, and none can
        # be the lowest match unless it ties the window's lowest.
        floor_above = _f32(high - error - TINY)
        if above == 0 or (floor_above > threshold and matches.size and matches.min() <= floor_above):
            if not matches.size:
                return 0, None
            return above + int(matches.size), _f32(matches.min())
        width *= 4


def exact_at_least(scores: ScopeScores, cutoff: float, query: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    """(asset ids, exact scores) of every photo scoring at least `cutoff` exactly."""
    low = float(cutoff) - scores.error - 2 * _ulp(cutoff) - TINY
    ids, vectors = scores.photos(scores.select(low, np.inf))
    exact = exact_parts(query, vectors, split).score
    keep = exact >= np.float32(cutoff)
    return np.asarray(ids)[keep], exact[keep]


def exact_neighbours(scores: ScopeScores, cutoff: float, side: int, query: np.ndarray,
                     split: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The `side` photos scoring lowest at or above `cutoff` and the `side` scoring highest
    below it, each as (asset ids, exact scores), best first (score desc, asset id asc)."""
    cut = np.float32(cutoff)
    width = 4 * scores.error + 4 * _ulp(cutoff)
    while True:
        low, high = float(cutoff) - width, float(cutoff) + width
        window = scores.select(low, high)
        ids, vectors = scores.photos(window)
        ids = np.asarray(ids)
        exact = exact_parts(query, vectors, split).score
        order = np.lexsort((ids, -exact.astype(np.float64)))
        ids, exact = ids[order], exact[order]
        at_or_above = exact >= cut
        above_ids, above = ids[at_or_above][-side:], exact[at_or_above][-side:]
        below_ids, below = ids[~at_or_above][:side], exact[~at_or_above][:side]
        # Photos outside the window score, exactly, above `high - error` or below `low + error`:
        # the window's picks stand when they are strictly nearer the cutoff than that.
        outside_above = scores.count_above(high)
        outside_below = scores.size - outside_above - len(window)
        above_done = outside_above == 0 or (len(above) == side and above[0] < _f32(high - scores.error - TINY))
        below_done = outside_below == 0 or (len(below) == side and below[-1] > _f32(low + scores.error + TINY))
        if above_done and below_done:
            return (above_ids, above), (below_ids, below)
        width *= 4
