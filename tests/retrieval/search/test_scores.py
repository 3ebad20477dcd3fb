"""The one definition of a score (retrieval.search.scores) and the exact answers built on fast
passes (retrieval.search.ranking.exact). Pure numpy, no database."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from retrieval.search.ranking.exact import exact_at_least, exact_count, exact_neighbours, exact_top
from retrieval.search.scores import _rounded_sum, above_float32, exact_parts

SPLIT = 24


def correctly_rounded(values_a, values_b) -> np.float32:
    """The exact inner product, rounded to the nearest float32 (ties to even), with fractions."""
    exact = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(values_a, values_b))
    nearest = np.float32(float(exact))
    candidates = [np.nextafter(nearest, np.float32(-np.inf)), nearest, np.nextafter(nearest, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.int32)) & 1))


def test_parts_are_the_exact_inner_products_rounded_once_to_float32():
    rng = np.random.default_rng(0)
    u = (rng.standard_normal(40) / 5).astype(np.float32)
    e = (rng.standard_normal((200, 40)) / 5).astype(np.float16)
    parts = exact_parts(u, e, SPLIT)
    for i in range(len(e)):
        assert parts.text[i] == correctly_rounded(u[:SPLIT], e[i, :SPLIT])
        assert parts.image[i] == correctly_rounded(u[SPLIT:], e[i, SPLIT:])
    assert np.array_equal(parts.score, parts.text + parts.image) and parts.score.dtype == np.float32


def test_a_sum_on_a_float32_midpoint_is_decided_by_what_float64_rounded_away():
    low = np.float32(1.0)
    high = np.nextafter(low, np.float32(2.0))
    middle = (float(low) + float(high)) / 2
    assert _rounded_sum(np.array([middle, 2.0 ** -80])) == high
    assert _rounded_sum(np.array([middle, -(2.0 ** -80)])) == low
    assert _rounded_sum(np.array([middle])) == low  # a true tie: to even


def test_the_same_photo_scores_the_same_whatever_else_is_scored_with_it():
    rng = np.random.default_rng(1)
    u = rng.standard_normal(64).astype(np.float32)
    e = rng.standard_normal((300, 64)).astype(np.float16)
    whole = exact_parts(u, e, 32)
    order = rng.permutation(300)
    shuffled = exact_parts(u, e[order], 32)
    assert np.array_equal(shuffled.score, whole.score[order])
    assert all(exact_parts(u, e[i:i + 1], 32).score[0] == whole.score[i] for i in range(0, 300, 37))
    assert np.array_equal(exact_parts(u, e.astype(np.float32), 32).score, whole.score)  # widened input
    with pytest.raises(ValueError):
        exact_parts(u, e.astype(np.float32) + np.float32(1e-4), 32)  # not what a halfvec holds
    assert above_float32(0.5) > np.float32(0.5) and above_float32(0.5) == np.nextafter(np.float32(0.5), np.float32(1))


class FastScores:
    """A fast pass over planted photos: each exact score moved by up to `error` (adversarially:
    many at the full error, in either direction)."""

    def __init__(self, u: np.ndarray, vectors: np.ndarray, error: float, rng: np.random.Generator) -> None:
        self.u, self.vectors = u, vectors
        self.asset_ids = np.arange(1000, 1000 + len(vectors))
        exact = exact_parts(u, vectors, SPLIT).score.astype(np.float64)
        self.fast = exact + error * rng.choice([-1.0, 1.0, 0.3, -0.7], size=len(vectors))
        self.error, self.size = error * 1.000001, len(vectors)

    def count_above(self, score):
        return int((self.fast > score).sum())

    def top(self, k):
        order = np.argsort(-self.fast, kind="stable")[:k]
        return order, self.fast[order]

    def select(self, low, high):
        return np.flatnonzero((self.fast >= low) & (self.fast <= high))

    def photos(self, positions):
        return self.asset_ids[positions], self.vectors[positions]


@pytest.fixture
def scope():
    rng = np.random.default_rng(2)
    u = (rng.standard_normal(40) / 6).astype(np.float32)
    vectors = (rng.standard_normal((3000, 40)) / 6).astype(np.float16)
    vectors[100:110] = vectors[5]  # exact ties: the asset id decides
    fast = FastScores(u, vectors, error=2e-3, rng=rng)
    exact = exact_parts(u, vectors, SPLIT).score
    order = np.lexsort((fast.asset_ids, -exact.astype(np.float64)))
    return fast, exact, order


def test_the_exact_top_n_from_a_fast_pass_is_the_brute_force_top_n(scope):
    fast, exact, order = scope

    def fetch(m):
        positions, values = fast.top(m)
        ids, vectors = fast.photos(positions)
        return ids, values, vectors

    for n in (1, 10, 200, 2999, 5000):
        ids, parts = exact_top(fetch, fast.size, n, fast.error, fast.u, SPLIT, n)
        assert ids.tolist() == fast.asset_ids[order[:n]].tolist()
        assert np.array_equal(parts.score, exact[order[:n]])


def test_the_exact_count_and_cutoff_agree_with_scoring_every_photo(scope):
    fast, exact, order = scope
    for threshold in (float(exact.max()) - 0.05, float(np.median(exact)), float(exact[order[40]]), float(exact.max()) + 1):
        count, cutoff = exact_count(fast, threshold, fast.u, SPLIT)
        truth = exact[exact.astype(np.float64) > threshold]
        assert count == truth.size
        assert (cutoff is None) if not truth.size else (cutoff == truth.min() and int((exact >= cutoff).sum()) == count)


def test_an_album_s_members_and_its_audit_window_agree_with_scoring_every_photo(scope):
    fast, exact, order = scope
    cutoff = exact[order[300]]
    ids, scores = exact_at_least(fast, cutoff, fast.u, SPLIT)
    assert set(ids.tolist()) == set(fast.asset_ids[exact >= cutoff].tolist())
    assert np.all(scores >= cutoff)
    (above_ids, above), (below_ids, below) = exact_neighbours(fast, cutoff, 12, fast.u, SPLIT)
    ranked_ids = fast.asset_ids[order]
    split = int((exact >= cutoff).sum())
    assert above_ids.tolist() == ranked_ids[split - 12:split].tolist()
    assert below_ids.tolist() == ranked_ids[split:split + 12].tolist()
    assert np.all(above >= cutoff) and np.all(below < cutoff)
