"""A photo's score for a query: one definition, computed one way wherever it is stored or compared.

A photo's stored vector e = [I; V] is half precision (the `halfvec` column); a query vector
u = [(1-λ)t; λq] is single precision (`Search.query_vector`). The score parts are

    text part  = <u_t, I>   and   image part = <u_v, V>,

each the *exact* inner product rounded once to float32 (round to nearest, ties to even), and the
score is their float32 sum. Every number a search, a match count, an album or a page stores or
compares is this float32 value (`real` columns), so a match count, `score >= cutoff`, an
album's members and its audit page agree to the last bit, whatever device or library ranked
the photos (the fast passes of `retrieval.search.ranking` only choose which photos to score here).

Computed in float64: the product of a float32 and a float16 is exact in
float64; a float64 sum of n terms is off by at most γ_n·Σ|terms| (γ_n = n·2⁻⁵³/(1-n·2⁻⁵³), any
summation order). Where that interval holds a float32 rounding boundary, the part is summed
again exactly (`math.fsum`), so the result never depends on how a BLAS library orders its sums.
That re-summation is needed for about one part in 10⁵.

Pure numpy, no Django and no torch: the web process, the albums' scoring and the search worker
import it alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScoreParts", "as_score", "exact_parts", "above_float32"]

UNIT_ROUNDOFF_64 = 2.0 ** -53


@dataclass(frozen=True)
class ScoreParts:
    """Float32 text parts, image parts and scores (= text + image in float32), one per photo."""

    text: np.ndarray
    image: np.ndarray

    @property
    def score(self) -> np.ndarray:
        return self.text + self.image  # float32 + float32: one IEEE rounding, the same everywhere


def as_score(value: float) -> np.float32:
    """A stored score or cutoff as the float32 it is (a `real` column read back as a Python float
    is that float32's shortest decimal, which round-trips exactly)."""
    return np.float32(value)


def above_float32(value: float | np.floating) -> np.float32:
    """The smallest float32 above `value`: a cutoff no photo reaches (a search without matches)."""
    return np.nextafter(np.float32(value), np.float32(np.inf))


def exact_parts(query: np.ndarray, vectors: np.ndarray, split: int) -> ScoreParts:
    """The score parts of `vectors` (rows of stored photo vectors, float16 or their exact float32
    widening) for `query` (float32, length = row length); `split` is the text half's length."""
    u = np.asarray(query, dtype=np.float32).astype(np.float64)
    e = np.asarray(vectors)
    if e.dtype != np.float16:
        widened = e.astype(np.float32)
        if not np.array_equal(widened.astype(np.float16).astype(np.float32), widened):
            raise ValueError("photo vectors must be half-precision values (as the database stores them)")
        e = widened.astype(np.float16)
    e = e.reshape(-1, u.shape[0]).astype(np.float64)  # exact widening
    parts = np.empty((e.shape[0], 2), dtype=np.float32)
    for col, (lo, hi) in enumerate(((0, split), (split, u.shape[0]))):
        block, half = e[:, lo:hi], u[lo:hi]
        # einsum, not `@`: BLAS would wake its threads for a product this small, which costs
        # milliseconds on a busy machine; einsum's loops run in this thread.
        approx = np.einsum("ij,j->i", block, half)
        # Error bound of the float64 sums: γ_n·Σ|terms| <= γ_n·‖u‖·‖e‖ (Cauchy-Schwarz), doubled
        # for the rounding of the norms themselves.
        n = hi - lo
        gamma = n * UNIT_ROUNDOFF_64 / (1.0 - n * UNIT_ROUNDOFF_64)
        bound = 2.0 * gamma * np.sqrt(np.einsum("ij,ij->i", block, block) * float(half @ half))
        rounded = approx.astype(np.float32)
        for row in np.flatnonzero(_near_a_boundary(approx, rounded, bound)):
            rounded[row] = _rounded_sum(block[row] * half)
        parts[:, col] = rounded
    return ScoreParts(text=np.ascontiguousarray(parts[:, 0]), image=np.ascontiguousarray(parts[:, 1]))


def _near_a_boundary(approx: np.ndarray, rounded: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Where [approx - bound, approx + bound] reaches a midpoint between `rounded` and one of its
    float32 neighbours, i.e. where the exact sum might round to another float32."""
    r = rounded.astype(np.float64)
    below = np.nextafter(rounded, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(rounded, np.float32(np.inf)).astype(np.float64)
    return (approx - bound <= (r + below) / 2) | (approx + bound >= (r + above) / 2)


def _rounded_sum(terms: np.ndarray) -> np.float32:
    """The exact sum of float64 terms (each exact), rounded once to float32."""
    total = math.fsum(terms)  # the exact sum, correctly rounded to float64
    rounded = np.float32(total)
    exact_here = float(rounded)
    if exact_here != total:
        # `total` may itself sit exactly on a float32 midpoint although the exact sum does not:
        # then the side of the midpoint the exact sum lies on decides, not ties-to-even.
        toward = np.float32(np.inf) if total > exact_here else np.float32(-np.inf)
        neighbour = np.nextafter(rounded, toward)
        if (exact_here + float(neighbour)) / 2 == total:
            residual = math.fsum([*terms, -total])
            if residual != 0.0:
                return neighbour if (residual > 0) == (total > exact_here) else rounded
    return rounded
