"""Where a category's photos end in a ranked list: a match count and a cutoff score.

A search ranks every photo of its scope; it does not say how many of them are photos of the
category. This module estimates that from the fused scores of *all* photos in the scope (not
only the stored top N), with pure numpy and no Django, so it can be tested and benchmarked on
planted scores.

The method: a two-component mixture on the one-dimensional scores.

* Background: the photos of other categories. Their scores form the bulk of the distribution,
  so the component starts at the median and the MAD-based spread of all scores (robust while
  the category is a minority of the scope, which is what a category query over a library is).
* Category: the photos of the query's category, a bump in the upper tail. Its location starts
  at a reference score that on-category photos are expected to reach (`category_hint`: the
  product passes the scores of the query's own proxies, see `retrieval.search.matches`), clipped into
  the observed upper tail; without a hint, at the mean of the scores beyond 3 spreads of the
  bulk. The hint only starts the fit: generated proxies sit closer to their own query than real
  photos do, so it would overshoot as a fixed location.
* Both components are Gaussians fitted by EM (a few dozen iterations on a histogram: cheap for
  100k scores). Guards keep the fit meaningful: the category mean stays above the background
  mean, the spreads never collapse below a quarter of the bulk's spread, and the category
  weight stays in [0, MAX_CATEGORY_WEIGHT].

What comes out of the fit, for every photo, is its posterior probability of belonging to the
category. The matches are the photos, from the top of the ranking down, whose posterior exceeds
`posterior` (the site's CLETIR_MATCH_POSTERIOR, default 0.5: more likely in than out); `count`
is how many they are and `cutoff` the score of the last one. A higher threshold gives fewer,
surer matches; a lower one more.

Why this count and not the expected one (the sum of the posteriors, = fitted weight × N): in
theory the sum is unbiased and the 0.5 rule under-counts small overlapping categories, but
real backgrounds have a heavier upper tail than a Gaussian (related categories score high), the
category component absorbs part of it, and the sum over-counts. On planted scores with such a
tail the 0.5 rule is within 20% of the true size for 97% of 2-20% categories at a 4-spread
separation, the sum for 86% (bench/albums.py prints both).

When the scores show no separate category (the fitted category is within two background
spreads of the background, holds under MIN_CATEGORY_PHOTOS photos, or the mixture does not beat
a single Gaussian by BIC), the count is 0 and the cutoff is above the best score: nothing is
claimed to match.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MatchEstimate", "estimate_matches"]

# The category is assumed to be a minority of the scope: above this weight the "background"
# would no longer be the bulk, and the fit would label the wrong component.
MAX_CATEGORY_WEIGHT = 0.5
# Fewer expected matches than this is no evidence of a category.
MIN_CATEGORY_PHOTOS = 1.0
# The category must sit at least this many background spreads above the background.
MIN_SEPARATION = 2.0
# Spreads never fall below this share of the bulk's robust spread (no collapse onto a few
# photos at the top).
MIN_SPREAD_SHARE = 0.25
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-9
# Scores are binned for EM above this many (the fit needs the shape, not every value).
HISTOGRAM_ABOVE = 20_000
HISTOGRAM_BINS = 2_000
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class MatchEstimate:
    count: int
    cutoff: float  # scores >= cutoff are matches; above the best score when count is 0
    background_mean: float
    background_std: float
    category_mean: float
    category_std: float
    category_weight: float

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    z = (x - mean) / std
    return np.exp(-0.5 * z * z) / (std * np.sqrt(2 * np.pi))


def _posteriors(x: np.ndarray, weight: float, cat: tuple[float, float], bg: tuple[float, float]) -> np.ndarray:
    """P(category | score) for every x (computed in log space: no 0/0 far in the tails)."""
    def log_pdf(mean: float, std: float) -> np.ndarray:
        z = (x - mean) / std
        return -0.5 * z * z - np.log(std)

    log_c = np.log(max(weight, 1e-300)) + log_pdf(*cat)
    log_b = np.log(max(1.0 - weight, 1e-300)) + log_pdf(*bg)
    return 1.0 / (1.0 + np.exp(np.clip(log_b - log_c, -700, 700)))


def _no_matches(scores: np.ndarray, mean: float, std: float) -> MatchEstimate:
    top = float(scores.max()) if scores.size else 0.0
    return MatchEstimate(count=0, cutoff=float(np.nextafter(top, np.inf)), background_mean=mean,
                         background_std=std, category_mean=mean, category_std=std, category_weight=0.0)


def estimate_matches(scores: np.ndarray, category_hint: float | None = None, posterior: float = 0.5) -> MatchEstimate:
    """Estimate how many of `scores` (one fused score per photo of the scope) belong to the
    query's category, and the score where they end. See the module docstring for the method.

    `category_hint`: a score an on-category photo is expected to reach (starts the category
    component). `posterior` in (0, 1): how likely a photo must be to belong to the category to
    count as a match.
    """
    if not 0.0 < posterior < 1.0:
        raise ValueError(f"posterior must lie in (0, 1), got {posterior}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 3:
        return _no_matches(s, float(s.mean()) if s.size else 0.0, 0.0)
    median = float(np.median(s))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(s - median)))
    if spread <= 0:  # more than half the photos score the same: use the plain spread
        spread = float(s.std())
    if spread <= 0:
        return _no_matches(s, median, 0.0)
    floor = MIN_SPREAD_SHARE * spread

    # EM on (value, count) pairs: every score once for small scopes, a histogram for large ones.
    if s.size > HISTOGRAM_ABOVE:
        counts, edges = np.histogram(s, bins=HISTOGRAM_BINS)
        keep = counts > 0
        x, w = ((edges[:-1] + edges[1:]) / 2)[keep], counts[keep].astype(np.float64)
    else:
        x, w = s, np.ones_like(s)
    n = float(w.sum())

    top = float(s.max())
    tail = s[s > median + 3 * spread]
    start = float(tail.mean()) if tail.size else float(np.quantile(s, 0.99))
    if category_hint is not None and np.isfinite(category_hint):
        start = float(np.clip(category_hint, median + 2 * spread, top))
    bg, cat = (median, spread), (start, spread)
    weight = max(float((s > (median + start) / 2).mean()), 1.0 / s.size)

    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        r = _posteriors(x, weight, cat, bg) * w
        rc, rb = float(r.sum()), n - float(r.sum())
        if rc <= 0 or rb <= 0:
            break
        weight = min(rc / n, MAX_CATEGORY_WEIGHT)
        mean_c = float((r * x).sum() / rc)
        mean_b = float(((w - r) * x).sum() / rb)
        std_c = max(float(np.sqrt((r * (x - mean_c) ** 2).sum() / rc)), floor)
        std_b = max(float(np.sqrt(((w - r) * (x - mean_b) ** 2).sum() / rb)), floor)
        mean_c = max(mean_c, mean_b)  # the category is the upper component, by definition
        cat, bg = (mean_c, std_c), (mean_b, std_b)
        log_likelihood = float((w * np.log(weight * _normal_pdf(x, *cat) + (1 - weight) * _normal_pdf(x, *bg) + 1e-300)).sum())
        if abs(log_likelihood - previous) < EM_TOLERANCE * max(1.0, abs(log_likelihood)):
            break
        previous = log_likelihood

    p = _posteriors(s, weight, cat, bg)
    expected = float(p.sum())
    # BIC: the mixture's 3 extra parameters must buy more likelihood than 3/2 ln N, else a
    # single background explains the scores as well (a Gaussian's own tail fits a "category").
    single = float((w * np.log(_normal_pdf(x, float(s.mean()), float(s.std())) + 1e-300)).sum())
    mixture = float((w * np.log(weight * _normal_pdf(x, *cat) + (1 - weight) * _normal_pdf(x, *bg) + 1e-300)).sum())
    if (expected < MIN_CATEGORY_PHOTOS or cat[0] - bg[0] < MIN_SEPARATION * bg[1]
            or 2 * (mixture - single) < 3 * np.log(n)):
        return _no_matches(s, bg[0], bg[1])

    ordered = np.sort(s)[::-1]
    # From the top down to the first photo that is not likely enough: a prefix of the ranking,
    # so a wide category component cannot claim photos far down the background's lower tail.
    below = np.flatnonzero(_posteriors(ordered, weight, cat, bg) <= posterior)
    count = int(below[0]) if below.size else int(ordered.size)
    cutoff = float(ordered[count - 1]) if count else float(np.nextafter(top, np.inf))
    return MatchEstimate(count=count, cutoff=cutoff, background_mean=bg[0], background_std=bg[1],
                         category_mean=cat[0], category_std=cat[1], category_weight=weight)
