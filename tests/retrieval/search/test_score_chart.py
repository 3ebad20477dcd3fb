"""The cutoff as a picture, without a database: what the estimate keeps, and the SVG drawn from it."""
import re

import numpy as np
import pytest

from retrieval.search.cutoff import DISPLAY_BINS, HISTOGRAM_BINS, Mixture, ScoreHistogram, estimate_matches
from retrieval.search.score_chart import (
    LEFT,
    PLOT_WIDTH,
    chart_of,
    chart_of_estimate,
    chart_svg,
    nice_ticks,
)
from tests.retrieval.search.test_cutoff import planted_scores


def test_the_estimate_keeps_its_histogram_in_a_few_bins_that_add_up_to_the_scope() -> None:
    scores, _ = planted_scores(np.random.default_rng(3), 5000, 300, separation=4.0)
    stored = estimate_matches(scores).as_dict()
    histogram = stored["histogram"]
    assert len(histogram["counts"]) == DISPLAY_BINS and sum(histogram["counts"]) == 5000
    assert (histogram["low"], histogram["high"]) == (float(scores.min()), float(scores.max()))
    # The bars are sums of the bins the mixture was fitted on.
    fitted = ScoreHistogram.of(scores)
    assert histogram["counts"] == fitted.counts.reshape(DISPLAY_BINS, HISTOGRAM_BINS // DISPLAY_BINS).sum(axis=1).tolist()
    assert Mixture.of_estimate(stored).category[0] == pytest.approx(stored["category_mean"])
    with pytest.raises(ValueError):
        fitted.coarsened(60)


def _planted_estimate(**change) -> dict:
    """Scores from 0 to 1 in 64 bars; the category at 0.8 (10% of the photos), the rest at 0.3."""
    counts = [10] * 48 + [0] * 6 + [4] * 10
    return {"count": 40, "cutoff": 0.75, "background_mean": 0.3, "background_std": 0.1, "category_mean": 0.8,
            "category_std": 0.05, "category_weight": 0.1, "photos": sum(counts),
            "histogram": {"low": 0.0, "high": 1.0, "counts": counts}, **change}


def test_the_svg_draws_a_bar_per_bin_the_two_components_and_the_cutoff_where_it_scores() -> None:
    chart = chart_of_estimate(_planted_estimate(), 40, 0.75)
    svg = chart_svg(chart)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" id="score-chart"') and svg.endswith("</svg>")
    assert len(re.findall(r'<rect class="bar"', svg)) == DISPLAY_BINS
    # Scores 0..1 over the plot's width: 0.75 is three quarters along.
    x = LEFT + 0.75 * PLOT_WIDTH
    assert f'<line id="score-chart-cutoff" x1="{x:g}" x2="{x:g}"' in svg
    assert 'data-score="0.75"' in svg and ">about 40 matches</text>" in svg
    assert 'class="component background"' in svg and 'class="component category"' in svg
    # Readable without the picture: a title, a description and an aria-label saying the same.
    summary = ("Scores of 520 photos, from 0.00 to 1.00, in 64 bars. Fitted: the other photos around 0.30 (about "
               "468), the category around 0.80 (about 52). Cutoff 0.750: about 40 matches.")
    assert chart.summary == summary
    assert f'role="img" aria-label="{summary}"' in svg
    assert "<title id=\"score-chart-title\">Scores of the 520 photos in scope, and the cutoff</title>" in svg
    assert f'<desc id="score-chart-desc">{summary}</desc>' in svg
    # Score ticks every 0.2, count ticks from 0.
    for tick in ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0"):
        assert f">{tick}</text>" in svg
    assert re.search(r'<text x="52" y="[0-9.]+" dy="0.32em">0</text>', svg)


def test_the_category_curve_is_its_share_of_the_photos_per_bar() -> None:
    chart = chart_of_estimate(_planted_estimate(), 40, 0.75)
    # At its mean a Gaussian component holds photos × bar width / (std √2π) per bar.
    at_mean = chart.category.counts_at(np.array([0.8]), chart.histogram.bin_width)[0]
    assert at_mean == pytest.approx(52 * (1 / 64) / (0.05 * np.sqrt(2 * np.pi)))


def test_without_a_fit_or_a_match_there_are_no_components_and_no_line() -> None:
    chart = chart_of_estimate(_planted_estimate(category_weight=0.0), 0, 1.0000001)
    svg = chart_svg(chart)
    assert "component" not in svg and "score-chart-cutoff" not in svg and len(re.findall('class="bar"', svg)) == 64
    assert chart.summary.endswith("No separate group of high scores was fitted. No clear matches.")
    # An estimate stored before the picture existed has nothing to draw.
    assert chart_of_estimate({"count": 3, "cutoff": 0.5, "photos": 9}, 3, 0.5) is None
    assert chart_of(ScoreHistogram.of(np.full(5, 0.3)), None, 0.3, "x") is None


def test_a_cutoff_outside_the_scores_widens_the_axis_and_text_is_escaped() -> None:
    histogram = ScoreHistogram.from_dict({"low": 0.2, "high": 0.6, "counts": [1] * 64})
    chart = chart_of(histogram, None, 0.7, "<b>7</b> & more")
    assert chart.x_range == (0.2, 0.7)
    assert chart.x_of(0.7) == pytest.approx(LEFT + PLOT_WIDTH)
    svg = chart_svg(chart)
    assert "&lt;b&gt;7&lt;/b&gt; &amp; more" in svg and "<b>" not in svg


def test_nice_ticks() -> None:
    assert nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.113, 0.457, 6) == [0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45]
    assert nice_ticks(0.0, 83.0, 5) == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert nice_ticks(0.0, 230.0, 5) == [0.0, 50.0, 100.0, 150.0, 200.0]
    assert nice_ticks(0.3, 0.3, 5) == [0.3]
