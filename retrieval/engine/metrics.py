"""Ranking metrics: AP / mAP (Oxford/Paris revisited convention), precision@k, recall@k, and
precision-recall curves.

AP is the area under the precision-recall curve by the trapezoid rule over the ranks of the
positives, exactly as ``compute_ap`` of the revisited Oxford/Paris benchmark (Radenović et al.
2018), which the METHOD.md protocol prescribes. With the j-th positive (0-based) at 0-based rank
r_j and n positives::

    precision_0 = j / r_j        if r_j > 0 else 1
    precision_1 = (j + 1) / (r_j + 1)
    AP = sum_j (precision_0 + precision_1) / 2 * (1 / n)

Ranking: scores are sorted descending with a stable sort, so ties keep the database order
(deterministic; ties are rare with float features). Integer and boolean scores are ranked as
numbers (True above False); a NaN score is an error, never silently ranked last. A query without positives has an undefined
AP (NaN) and is left out of the mean, like the revisited benchmark does.

A precision-recall curve is drawn as interpolated precision at fixed recall levels (the
PASCAL VOC / COCO convention): at recall r, the best precision of any cut of the ranking that
recalls at least r. It is defined for every level, so the curves of queries with different
numbers of positives average level by level into one curve per method.

Everything is vectorised over queries; the (Q, N) work is done in chunks of queries so that an
ImageNet-sized evaluation (1000 x 50000) does not need gigabytes at once.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ranked_positive_flags",
    "average_precision_from_ranks",
    "average_precision_ranked",
    "average_precision",
    "average_precisions",
    "mean_average_precision",
    "precision_at_k",
    "recall_at_k",
    "RECALL_LEVELS",
    "interpolated_precision",
]

# The recall levels of a precision-recall curve: 0, 0.01, ..., 1 (COCO's 101 points).
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)

# Number of (query, item) cells handled per chunk: bounds temporary memory to ~100 MB.
_CHUNK_CELLS = 4_000_000


def _as_float_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a floating array that ``argsort(-s)`` ranks correctly, refusing NaN.

    Floating scores are kept as they are (no float64 copy of an ImageNet-sized matrix). Integer
    and boolean scores are cast to float64: negating an unsigned integer wraps (-3 becomes
    2**64 - 3, so the best item would rank last) and numpy refuses to negate a boolean. A NaN
    has no place in a ranking (argsort puts it last, silently), so it is an error that names
    the first query holding one.
    """
    s = np.asarray(scores)
    if np.issubdtype(s.dtype, np.complexfloating) or not (
        np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_
    ):
        raise TypeError(f"scores must be real numbers or booleans, got dtype {s.dtype}")
    if not np.issubdtype(s.dtype, np.floating):
        return s.astype(np.float64)
    nan = np.isnan(s)
    if nan.any():
        where = np.argwhere(nan)[0]
        query = f"query {where[0]}, " if s.ndim == 2 else ""
        raise ValueError(f"scores contain NaN ({query}item {where[-1]}): a NaN score cannot be ranked")
    return s


def _as_2d(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    s = _as_float_scores(scores)
    p = np.asarray(positives).astype(bool)
    if s.shape != p.shape:
        raise ValueError(f"scores {s.shape} and positives {p.shape} must have the same shape")
    if s.ndim == 1:
        return s[None], p[None], True
    if s.ndim != 2:
        raise ValueError(f"expected (N,) or (Q, N) arrays, got {s.shape}")
    return s, p, False


def ranked_positive_flags(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Positive flags in ranked order (descending score, stable): (N,) -> (N,), (Q, N) -> (Q, N)."""
    s, p, single = _as_2d(scores, positives)
    order = np.argsort(-s, axis=1, kind="stable")
    flags = np.take_along_axis(p, order, axis=1)
    return flags[0] if single else flags


def _ap_of_ranked(flags: np.ndarray) -> np.ndarray:
    """Vectorised compute_ap over rows of ranked boolean flags (Q, N) -> (Q,), NaN if no positive."""
    flags = flags.astype(bool)
    n_pos = flags.sum(axis=1)
    # j: 0-based index of each positive among the positives; r: its 0-based rank.
    j = np.cumsum(flags, axis=1, dtype=np.float64) - 1.0
    r = np.arange(flags.shape[1], dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision_0 = np.where(r > 0, j / np.where(r > 0, r, 1.0), 1.0)
    precision_1 = (j + 1.0) / (r + 1.0)
    area = np.where(flags, (precision_0 + precision_1) / 2.0, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_pos > 0, area / np.maximum(n_pos, 1), np.nan)


def average_precision_from_ranks(positive_ranks: np.ndarray, n_positives: int | None = None) -> float:
    """AP from the 0-based ranks of the positives (the literal compute_ap interface).

    ``n_positives`` defaults to ``len(positive_ranks)``; pass a larger number when some
    positives were never retrieved (they then contribute no area).
    """
    ranks = np.sort(np.asarray(positive_ranks, dtype=np.int64).ravel())
    n = len(ranks) if n_positives is None else int(n_positives)
    if n <= 0:
        return float("nan")
    if len(ranks) and (ranks[0] < 0 or np.any(np.diff(ranks) == 0)):
        raise ValueError("ranks must be distinct and non-negative")
    j = np.arange(len(ranks), dtype=np.float64)
    r = ranks.astype(np.float64)
    precision_0 = np.where(r > 0, j / np.where(r > 0, r, 1.0), 1.0)
    precision_1 = (j + 1.0) / (r + 1.0)
    return float(((precision_0 + precision_1) / 2.0).sum() / n)


def average_precision_ranked(ranked_flags: np.ndarray) -> float:
    """AP of one ranking given as positive flags in ranked order (index 0 = top)."""
    flags = np.asarray(ranked_flags).astype(bool)
    if flags.ndim != 1:
        raise ValueError(f"expected a 1-D ranking, got shape {flags.shape}")
    return float(_ap_of_ranked(flags[None])[0])


def average_precisions(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per-query AP for (Q, N) scores and positive masks -> (Q,) float64, NaN without positives."""
    s, p, _ = _as_2d(scores, positives)
    out = np.empty(s.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_CELLS // max(1, s.shape[1]))
    for start in range(0, s.shape[0], step):
        stop = start + step
        out[start:stop] = _ap_of_ranked(ranked_positive_flags(s[start:stop], p[start:stop]))
    return out


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one query: ``scores`` (N,) (higher = better), ``positives`` (N,) bool."""
    if np.ndim(scores) != 1:
        raise ValueError(f"expected 1-D scores for one query, got {np.shape(scores)}; use average_precisions")
    s = scores
    return float(average_precisions(s, positives)[0])


def mean_average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """mAP over the queries (rows) that have at least one positive."""
    aps = average_precisions(scores, positives)
    valid = ~np.isnan(aps)
    if not valid.any():
        raise ValueError("no query has a positive: mAP is undefined")
    return float(aps[valid].mean())


def _topk_hits(scores: np.ndarray, positives: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    s, p, single = _as_2d(scores, positives)
    k_eff = min(k, s.shape[1])
    hits = ranked_positive_flags(s, p)[:, :k_eff].sum(axis=1).astype(np.float64)
    return hits, p.sum(axis=1).astype(np.float64), single


def precision_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> float | np.ndarray:
    """Fraction of the top k that are positive; float for (N,) input, (Q,) array for (Q, N).

    The denominator is k even when the database is smaller (the missing slots count as misses).
    """
    hits, _, single = _topk_hits(scores, positives, k)
    out = hits / k
    return float(out[0]) if single else out


def recall_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> float | np.ndarray:
    """Fraction of the positives found in the top k; NaN for a query without positives."""
    hits, n_pos, single = _topk_hits(scores, positives, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(n_pos > 0, hits / np.maximum(n_pos, 1), np.nan)
    return float(out[0]) if single else out


def interpolated_precision(scores: np.ndarray, positives: np.ndarray,
                           recall_levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """Interpolated precision at each of `recall_levels` per query: (Q, N) -> (Q, R), NaN rows
    for queries without positives; (N,) -> (R,).

    With n positives, recall r is first reached at the k-th positive, k = ceil(r n) (at least
    1), and the best precision from there on is reached at a positive (precision only falls
    between two positives): the maximum of (j + 1) / (rank_j + 1) over positives j >= k - 1.
    """
    s, p, single = _as_2d(scores, positives)
    levels = np.asarray(recall_levels, dtype=np.float64)
    if levels.ndim != 1 or np.any((levels < 0) | (levels > 1)):
        raise ValueError("recall levels must be a 1-D array of values in [0, 1]")
    out = np.full((s.shape[0], len(levels)), np.nan)
    step = max(1, _CHUNK_CELLS // max(1, s.shape[1]))
    for start in range(0, s.shape[0], step):
        flags = ranked_positive_flags(s[start:start + step], p[start:start + step])
        for row, ranked in enumerate(flags):
            ranks = np.flatnonzero(ranked)
            n = len(ranks)
            if not n:
                continue
            precision = np.arange(1, n + 1, dtype=np.float64) / (ranks + 1.0)
            best_from = np.maximum.accumulate(precision[::-1])[::-1]
            # The 1e-9 keeps r n that lands on a whole number (0.3 * 10 = 3.0000000000000004)
            # at that number.
            k = np.clip(np.ceil(levels * n - 1e-9).astype(np.int64), 1, n)
            out[start + row] = best_from[k - 1]
    return out[0] if single else out
