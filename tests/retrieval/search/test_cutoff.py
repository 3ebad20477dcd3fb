"""The match estimate (retrieval.cutoff) on planted scores: categories of known size whose
scores overlap a background of other categories. Pure numpy, no database."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.search.cutoff import estimate_matches


def planted_scores(rng: np.random.Generator, photos: int, size: int, separation: float,
                   scale: float = 0.02, base: float = 0.2) -> tuple[np.ndarray, float]:
    """Fused-like scores of `photos` photos, `size` of them of the query's category, and the
    category's true mean. The background is 30 other categories, each with its own offset, one
    of them related (it scores 0.4 × separation above the rest): a heavier, skewed upper tail
    than a single Gaussian, as real score distributions have. The category sits `separation`
    background spreads above, with a slightly wider spread, so the two overlap."""
    others = rng.integers(0, 30, photos - size)
    offsets = rng.normal(0.0, 0.5, 30)
    offsets[0] = 0.4 * separation
    background = offsets[others] + rng.normal(0.0, 1.0, photos - size)
    category = separation + rng.normal(0.0, 1.1, size)
    return base + scale * np.concatenate([category, background]), base + scale * separation


def relative_errors(separation: float, trials: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(trials):
        photos = int(rng.choice([2000, 5000]))
        size = int(photos * rng.uniform(0.02, 0.2))
        scores, true_mean = planted_scores(rng, photos, size, separation)
        # The proxies overshoot the real photos (they are what the query was made from).
        hint = true_mean + 0.02 * rng.uniform(0.0, 2.0)
        errors.append(abs(estimate_matches(scores, hint).count - size) / size)
    return np.array(errors)


def test_the_count_is_within_20_percent_for_at_least_80_percent_of_planted_categories():
    errors = relative_errors(separation=4.0, trials=40, seed=11)
    assert (errors <= 0.2).mean() >= 0.8, np.round(np.sort(errors), 3)


def test_the_cutoff_is_the_score_of_the_last_match_and_the_threshold_moves_it_monotonically():
    rng = np.random.default_rng(5)
    scores, true_mean = planted_scores(rng, 3000, 300, 4.0)
    strict, balanced, inclusive = (estimate_matches(scores, true_mean, q) for q in (0.9, 0.5, 0.1))
    assert strict.count < balanced.count < inclusive.count
    ordered = np.sort(scores)[::-1]
    for estimate in (strict, balanced, inclusive):
        assert estimate.cutoff == ordered[estimate.count - 1]
        assert int((scores >= estimate.cutoff).sum()) == estimate.count
    assert balanced.category_mean > balanced.background_mean + balanced.background_std
    with pytest.raises(ValueError):
        estimate_matches(scores, posterior=1.0)


def test_large_scopes_are_fitted_on_a_histogram_with_the_same_accuracy():
    rng = np.random.default_rng(8)
    scores, true_mean = planted_scores(rng, 60_000, 3000, 4.0)
    assert abs(estimate_matches(scores, true_mean).count - 3000) / 3000 <= 0.2


def test_no_category_means_no_matches():
    rng = np.random.default_rng(3)
    assert estimate_matches(rng.normal(0.2, 0.02, 5000)).count == 0
    constant = estimate_matches(np.full(10, 0.3))
    assert (constant.count, constant.cutoff > 0.3) == (0, True)
    assert estimate_matches(np.array([0.5])).count == 0
