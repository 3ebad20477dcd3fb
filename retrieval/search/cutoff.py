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
* Both components are Gaussians fitted by EM. Everything is fitted on a histogram of the
  scores (`ScoreHistogram`, HISTOGRAM_BINS bins from the lowest to the highest score): the
  median, the spread, the tail and the EM iterations cost the same for 2,000 scores as for
  10 million, and a backend that holds the scores elsewhere (a GPU) hands over the counts only. Guards keep the fit meaningful: the category mean stays above the background
  mean, the spreads never collapse below a quarter of the bulk's spread, and the category
  weight stays in [0, MAX_CATEGORY_WEIGHT].

What comes out of the fit is each score's posterior probability of belonging to the category.
The matches are the photos, from the top of the ranking down, whose posterior exceeds
`posterior` (the site's CLETIR_MATCH_POSTERIOR, default 0.5: more likely in than out): every
photo scoring above `Mixture.threshold`, the score where, coming down from the top, the
posterior first falls to `posterior`. So the count is one comparison per photo, no sort; `count`
is how many they are and `cutoff` the score of the last one. A higher threshold gives fewer,
surer matches; a lower one more.

Why this count and not the expected one (the sum of the posteriors, = fitted weight × N): in
theory the sum is unbiased and the 0.5 rule under-counts small overlapping categories, but
real backgrounds have a heavier upper tail than a Gaussian (related categories score high), the
category component absorbs part of it, and the sum over-counts. On planted scores with such a
tail the 0.5 rule is within 20% of the true size for 97% of 2-20% categories at a 4-spread
separation, the sum for 86% (bench/albums.py prints both).

What is kept for the picture of the cutoff (`retrieval.search.score_chart`): the histogram
summed into DISPLAY_BINS bins (`ScoreHistogram.coarsened`: sums of the fitted bins, so the
counts add up to the scope's photos exactly and no second pass over the scores is needed) and
the fitted components, in `MatchEstimate.as_dict` (a search's `match_estimate`, ~1 KB).

When the scores show no separate category (the fitted category is within two background
spreads of the background, holds under MIN_CATEGORY_PHOTOS photos, or the mixture does not beat
a single Gaussian by BIC), the count is 0 and the cutoff is above the best score: nothing is
claimed to match.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DISPLAY_BINS", "MatchEstimate", "Mixture", "ScoreHistogram", "estimate_matches", "fit_mixture"]

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
# Bins of the histogram everything is fitted on (bench/albums.py: the counts are as good as
# with every score); a bin is ~1/100 of a typical background spread.
HISTOGRAM_BINS = 1024
MAD_TO_SIGMA = 1.4826
# Bins of the histogram kept with an estimate for its picture: 1024 / 16, a bar per ~3 pixels
# of a page-wide chart, and a few hundred bytes of JSON.
DISPLAY_BINS = 64
# Where the posterior crosses the threshold is found on this many points from the top score
# down, then refined by bisection.
THRESHOLD_GRID = 4096


@dataclass(frozen=True)
class ScoreHistogram:
    """Counts of scores in equal bins from `low` to `high` (the lowest and highest score)."""

    counts: np.ndarray
    low: float
    high: float

    @classmethod
    def of(cls, scores: np.ndarray, bins: int = HISTOGRAM_BINS) -> ScoreHistogram:
        s = np.asarray(scores, dtype=np.float64).ravel()
        s = s[np.isfinite(s)]
        if not s.size:
            return cls(np.zeros(bins, dtype=np.int64), 0.0, 0.0)
        low, high = float(s.min()), float(s.max())
        if high <= low:
            counts = np.zeros(bins, dtype=np.int64)
            counts[0] = s.size
            return cls(counts, low, high)
        index = np.minimum(((s - low) * (bins / (high - low))).astype(np.int64), bins - 1)
        return cls(np.bincount(index, minlength=bins), low, high)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def centers(self) -> np.ndarray:
        width = (self.high - self.low) / len(self.counts)
        return self.low + width * (np.arange(len(self.counts)) + 0.5)

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated linearly inside its bin."""
        return _weighted_quantile(self.low, self.high, self.counts, q)

    def mean_std(self) -> tuple[float, float]:
        w = self.counts.astype(np.float64)
        mean = float((w * self.centers).sum() / w.sum())
        return mean, float(np.sqrt((w * (self.centers - mean) ** 2).sum() / w.sum()))

    def share_above(self, x: float) -> float:
        return float(self.counts[self.centers > x].sum()) / max(self.n, 1)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / len(self.counts)

    def coarsened(self, bins: int) -> ScoreHistogram:
        """The same scores in `bins` bins, each the sum of neighbouring ones (the number of bins
        must divide by `bins`): the same range, the same total."""
        if bins <= 0 or len(self.counts) % bins:
            raise ValueError(f"{len(self.counts)} bins do not sum into {bins}")
        return ScoreHistogram(self.counts.reshape(bins, -1).sum(axis=1), self.low, self.high)

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, stored: dict) -> ScoreHistogram:
        return cls(np.asarray(stored["counts"], dtype=np.int64), float(stored["low"]), float(stored["high"]))


def _weighted_quantile(low: float, high: float, counts: np.ndarray, q: float) -> float:
    cumulative = np.cumsum(counts, dtype=np.float64)
    target = q * cumulative[-1]
    i = int(np.searchsorted(cumulative, target))
    i = min(i, len(counts) - 1)
    before = cumulative[i - 1] if i else 0.0
    inside = (target - before) / counts[i] if counts[i] else 0.0
    width = (high - low) / len(counts)
    return low + width * (i + min(max(inside, 0.0), 1.0))


@dataclass(frozen=True)
class Mixture:
    """The fitted background and category components (Gaussians) and the category's weight."""

    weight: float
    category: tuple[float, float]  # mean, std
    background: tuple[float, float]

    @classmethod
    def of_estimate(cls, estimate: dict) -> Mixture | None:
        """The mixture kept in a stored estimate (`MatchEstimate.as_dict`); None when the fit
        found no separate category (its weight is 0)."""
        weight = float(estimate.get("category_weight") or 0.0)
        if weight <= 0:
            return None
        return cls(weight=weight, category=(float(estimate["category_mean"]), float(estimate["category_std"])),
                   background=(float(estimate["background_mean"]), float(estimate["background_std"])))

    def posterior(self, x: np.ndarray) -> np.ndarray:
        return _posteriors(np.asarray(x, dtype=np.float64), self.weight, self.category, self.background)

    def threshold(self, posterior: float, low: float, top: float) -> float:
        """The score above which photos are matches: coming down from `top`, where the
        posterior first falls to `posterior` or below (`top` itself when it already has;
        below `low` when it never does between `top` and `low`)."""
        grid = np.linspace(top, low, THRESHOLD_GRID)
        below = np.flatnonzero(self.posterior(grid) <= posterior)
        if not below.size:
            return low - max(1.0, abs(low))  # every photo is a match
        if below[0] == 0:
            return top
        inside, outside = grid[below[0]], grid[below[0] - 1]  # P(inside) <= posterior < P(outside)
        for _ in range(64):
            middle = (inside + outside) / 2
            if middle in (inside, outside):
                break
            if self.posterior(np.array([middle]))[0] <= posterior:
                inside = middle
            else:
                outside = middle
        return float(inside)


@dataclass(frozen=True)
class MatchEstimate:
    count: int
    cutoff: float  # scores >= cutoff are matches; above the best score when count is 0
    background_mean: float
    background_std: float
    category_mean: float
    category_std: float
    category_weight: float
    # The scores' histogram in DISPLAY_BINS bins, for the estimate's picture.
    histogram: ScoreHistogram | None = None

    def as_dict(self) -> dict:
        stored = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k != "histogram"}
        if self.histogram is not None:
            stored["histogram"] = self.histogram.as_dict()
        return stored


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


def fit_mixture(histogram: ScoreHistogram, category_hint: float | None = None) -> Mixture | None:
    """The two-component fit of the module docstring on a histogram of the scores; None when
    the scores show no separate category."""
    n = histogram.n
    if n < 3 or histogram.high <= histogram.low:
        return None
    median = histogram.quantile(0.5)
    centers, counts = histogram.centers, histogram.counts
    keep = counts > 0
    x, w = centers[keep], counts[keep].astype(np.float64)
    spread = MAD_TO_SIGMA * _weighted_quantile(*_distances(histogram, median), 0.5)
    single_mean, single_std = histogram.mean_std()
    if spread <= 0:  # more than half the photos score the same: use the plain spread
        spread = single_std
    if spread <= 0:
        return None
    floor = MIN_SPREAD_SHARE * spread

    top = histogram.high
    tail = centers > median + 3 * spread
    start = float((centers[tail] * counts[tail]).sum() / counts[tail].sum()) if counts[tail].sum() else histogram.quantile(0.99)
    if category_hint is not None and np.isfinite(category_hint):
        start = float(np.clip(category_hint, median + 2 * spread, top))
    bg, cat = (median, spread), (start, spread)
    weight = max(histogram.share_above((median + start) / 2), 1.0 / n)

    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        r = _posteriors(x, weight, cat, bg) * w
        rc, rb = float(r.sum()), float(n) - float(r.sum())
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

    expected = float((w * _posteriors(x, weight, cat, bg)).sum())
    # BIC: the mixture's 3 extra parameters must buy more likelihood than 3/2 ln N, else a
    # single background explains the scores as well (a Gaussian's own tail fits a "category").
    single = float((w * np.log(_normal_pdf(x, single_mean, max(single_std, floor)) + 1e-300)).sum())
    mixture = float((w * np.log(weight * _normal_pdf(x, *cat) + (1 - weight) * _normal_pdf(x, *bg) + 1e-300)).sum())
    if (expected < MIN_CATEGORY_PHOTOS or cat[0] - bg[0] < MIN_SEPARATION * bg[1]
            or 2 * (mixture - single) < 3 * np.log(n)):
        return None
    return Mixture(weight=weight, category=cat, background=bg)


def _distances(histogram: ScoreHistogram, median: float) -> tuple[float, float, np.ndarray]:
    """(low, high, counts) of a histogram of |score - median|, from the scores' histogram."""
    distance = np.abs(histogram.centers - median)
    bins = len(histogram.counts)
    high = float(distance.max()) if distance.size else 0.0
    if high <= 0:
        return 0.0, 0.0, np.array([histogram.n])
    index = np.minimum((distance * (bins / high)).astype(np.int64), bins - 1)
    return 0.0, high, np.bincount(index, weights=histogram.counts, minlength=bins)


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
    histogram = ScoreHistogram.of(s)
    fit = fit_mixture(histogram, category_hint)
    top = float(s.max()) if s.size else 0.0
    picture = histogram.coarsened(DISPLAY_BINS)
    if fit is None:
        mean, std = histogram.mean_std() if s.size else (0.0, 0.0)
        return MatchEstimate(count=0, cutoff=float(np.nextafter(top, np.inf)), background_mean=mean,
                             background_std=std, category_mean=mean, category_std=std, category_weight=0.0,
                             histogram=picture)
    matches = s[s > fit.threshold(posterior, histogram.low, histogram.high)]
    return MatchEstimate(count=int(matches.size),
                         cutoff=float(matches.min()) if matches.size else float(np.nextafter(top, np.inf)),
                         background_mean=fit.background[0], background_std=fit.background[1],
                         category_mean=fit.category[0], category_std=fit.category[1], category_weight=fit.weight,
                         histogram=picture)
