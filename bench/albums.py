"""Match-count benchmark: how far the estimated number of matching photos is from the truth.

    .venv/bin/python bench/albums.py [--trials 200] [--seed 0]

Pure numpy (no database): planted fused scores, as in tests/retrieval/test_cutoff.py. Each
trial is one category of known size in a scope of 2,000-20,000 photos; the background is 30
other categories with their own offsets, one of them related to the query (it scores 0.4 ×
the separation above the rest), so the background's upper tail is heavier than a Gaussian's.
The category sits `separation` background spreads above the background (its spread 1.1×):
the lower the separation, the more the two overlap. The category hint (what the proxies
score) overshoots the true category mean by 0-2 spreads, as generated proxies do.

Prints, per overlap level and category-size range, the relative error |estimate - true| / true
of `retrieval.search.cutoff.estimate_matches` with the site default (CLETIR_MATCH_POSTERIOR = 0.5):
median, 80th and 95th percentiles and the share of categories within 20%; and, for comparison,
the share within 20% of the expected count of the same fit (the sum of the posteriors), the
rule the method does not use.

Then the time the estimate takes on large scopes (planted scores of 100k and 1M photos): the
histogram of the scores, the mixture fitted on it, and the count (one comparison per score).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import time  # noqa: E402

from retrieval.search.cutoff import ScoreHistogram, _posteriors, estimate_matches, fit_mixture  # noqa: E402

SEPARATIONS = [(5.0, "low"), (4.0, "medium"), (3.0, "high")]
SIZE_RANGES = [(0.02, 0.20), (0.005, 0.02)]


def planted_scores(rng: np.random.Generator, photos: int, size: int, separation: float) -> tuple[np.ndarray, float]:
    others = rng.integers(0, 30, photos - size)
    offsets = rng.normal(0.0, 0.5, 30)
    offsets[0] = 0.4 * separation
    background = offsets[others] + rng.normal(0.0, 1.0, photos - size)
    category = separation + rng.normal(0.0, 1.1, size)
    return 0.2 + 0.02 * np.concatenate([category, background]), 0.2 + 0.02 * separation


def run(trials: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["| overlap (separation) | category size | median error | p80 | p95 | within 20% | within 20%, sum of posteriors |",
             "|---|---|---|---|---|---|---|"]
    for separation, label in SEPARATIONS:
        for low, high in SIZE_RANGES:
            errors, naive = [], []
            for _ in range(trials):
                photos = int(rng.choice([2000, 5000, 20000]))
                size = max(5, int(photos * rng.uniform(low, high)))
                scores, mean = planted_scores(rng, photos, size, separation)
                estimate = estimate_matches(scores, mean + 0.02 * rng.uniform(0.0, 2.0))
                errors.append(abs(estimate.count - size) / size)
                fit = (estimate.category_weight, (estimate.category_mean, estimate.category_std),
                       (estimate.background_mean, estimate.background_std))
                expected = float(_posteriors(scores, *fit).sum()) if estimate.count else 0.0
                naive.append(abs(expected - size) / size)
            e, n = np.array(errors), np.array(naive)
            lines.append(f"| {label} ({separation:g} σ) | {low:.1%}-{high:.0%} | {np.median(e):.3f} | "
                         f"{np.quantile(e, 0.8):.3f} | {np.quantile(e, 0.95):.3f} | {(e <= 0.2).mean():.0%} | {(n <= 0.2).mean():.0%} |")
    return lines


def timings(seed: int, repeats: int = 7) -> list[str]:
    """Median milliseconds of each step of the estimate on large planted scopes."""
    rng = np.random.default_rng(seed)
    lines = ["| photos | histogram ms | fit ms | count ms | whole estimate ms |", "|---|---|---|---|---|"]
    for photos in (100_000, 1_000_000):
        scores, mean = planted_scores(rng, photos, photos // 20, 4.0)
        steps: dict[str, list[float]] = {"histogram": [], "fit": [], "count": [], "whole": []}
        for _ in range(repeats):
            start = time.perf_counter()
            histogram = ScoreHistogram.of(scores)
            fitted = time.perf_counter()
            fit = fit_mixture(histogram, mean)
            counted = time.perf_counter()
            int((scores > fit.threshold(0.5, histogram.low, histogram.high)).sum())
            done = time.perf_counter()
            estimate_matches(scores, mean)
            steps["histogram"].append(fitted - start)
            steps["fit"].append(counted - fitted)
            steps["count"].append(done - counted)
            steps["whole"].append(time.perf_counter() - done)
        cells = " | ".join(f"{np.median(v) * 1000:.1f}" for v in steps.values())
        lines.append(f"| {photos:,} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("\n".join(run(args.trials, args.seed)))
    print()
    print("\n".join(timings(args.seed)))


if __name__ == "__main__":
    main()
