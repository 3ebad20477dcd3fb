"""The cutoff as a picture: a histogram of a scope's scores, the two fitted components scaled to
the counts, and the cutoff line, as inline SVG that reads without JavaScript.

An archivist judges "about N matches" by looking where the line cuts the distribution: a
category bump well apart from the bulk of the other photos is a trustworthy count, a bump that
merges into the bulk is not. The chart draws what the match estimate fitted
(`retrieval.search.cutoff`): the search page from the histogram and mixture stored with the
search's estimate, the album audit from the album scope's scores and the same fit.

Pure Python and numpy (no Django): `chart_svg` returns the markup with every text escaped, and
`ScoreChart.summary` the same facts as one line of text for readers that get no picture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np

from .cutoff import DISPLAY_BINS, Mixture, ScoreHistogram

# Geometry of the drawing (user units of the viewBox; the SVG scales to the page's width).
WIDTH, HEIGHT = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 34, 44
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Points per component curve.
CURVE_POINTS = 161

BAR_COLOUR, BACKGROUND_COLOUR, CATEGORY_COLOUR, CUTOFF_COLOUR = "#b9c6db", "#5b6575", "#1f7a4d", "#b3261e"


@dataclass(frozen=True)
class Component:
    """A fitted Gaussian and how many of the scope's photos it holds (weight × photos)."""

    mean: float
    std: float
    photos: float

    def counts_at(self, scores: np.ndarray, bin_width: float) -> np.ndarray:
        """Its expected photos per bin of `bin_width` at `scores`: what a bar would hold."""
        z = (scores - self.mean) / self.std
        return self.photos * bin_width * np.exp(-0.5 * z * z) / (self.std * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class ScoreChart:
    histogram: ScoreHistogram
    cutoff: float | None  # None: no line (nothing is counted as a match)
    caption: str  # what the line means, e.g. "about 60 matches"
    background: Component | None = None
    category: Component | None = None

    @property
    def photos(self) -> int:
        return self.histogram.n

    @property
    def x_range(self) -> tuple[float, float]:
        """The scores on the axis: the histogram's range, widened to hold the cutoff."""
        low, high = self.histogram.low, self.histogram.high
        if self.cutoff is not None:
            low, high = min(low, self.cutoff), max(high, self.cutoff)
        return low, high

    def x_of(self, score: float) -> float:
        low, high = self.x_range
        return LEFT + (score - low) / (high - low) * PLOT_WIDTH

    @property
    def summary(self) -> str:
        """The chart as one line of text."""
        h, step = self.histogram, _score_step(*self.x_range)
        parts = [f"Scores of {self.photos} photo{'' if self.photos == 1 else 's'}, from {_fmt(h.low, step)} "
                 f"to {_fmt(h.high, step)}, in {len(h.counts)} bars."]
        if self.category is not None and self.background is not None:
            parts.append(f"Fitted: the other photos around {_fmt(self.background.mean, step)} (about "
                         f"{round(self.background.photos)}), the category around {_fmt(self.category.mean, step)} "
                         f"(about {round(self.category.photos)}).")
        else:
            parts.append("No separate group of high scores was fitted.")
        if self.cutoff is not None:
            parts.append(f"Cutoff {_fmt(self.cutoff, step / 10)}: {self.caption}.")
        else:
            parts.append(f"{self.caption[:1].upper()}{self.caption[1:]}.")
        return " ".join(parts)


def chart_of(histogram: ScoreHistogram, fit: Mixture | None, cutoff: float | None, caption: str) -> ScoreChart | None:
    """The chart of a histogram (drawn in DISPLAY_BINS bars) and its fit; None when there is no
    distribution to draw (no photo, or every photo scores the same)."""
    if histogram.n == 0 or histogram.high <= histogram.low:
        return None
    bars = histogram.coarsened(DISPLAY_BINS) if len(histogram.counts) != DISPLAY_BINS else histogram
    background = category = None
    if fit is not None:
        background = Component(fit.background[0], fit.background[1], (1.0 - fit.weight) * histogram.n)
        category = Component(fit.category[0], fit.category[1], fit.weight * histogram.n)
    return ScoreChart(bars, cutoff, caption, background, category)


def chart_of_estimate(estimate: dict, match_count: int, cutoff: float | None) -> ScoreChart | None:
    """The chart of a search's stored match estimate; None for an estimate stored without its
    histogram (made before the picture existed)."""
    if not estimate or "histogram" not in estimate:
        return None
    caption = f"about {match_count} match{'' if match_count == 1 else 'es'}" if match_count else "no clear matches"
    return chart_of(ScoreHistogram.from_dict(estimate["histogram"]), Mixture.of_estimate(estimate),
                    cutoff if match_count else None, caption)


# ---------------------------------------------------------------------------- drawing


def nice_ticks(low: float, high: float, about: int) -> list[float]:
    """About `about` round values, 1, 2 or 5 × a power of ten apart, from `low` to `high`."""
    if high <= low:
        return [low]
    power = 10.0 ** math.floor(math.log10((high - low) / max(about, 1)))

    def ticks(step: float) -> list[float]:
        first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        return [round(k * step, 12) for k in range(first, last + 1)]

    # The step whose tick count is nearest `about` (the larger step on a tie).
    return min((ticks(m * power) for m in (10, 5, 2, 1)), key=lambda values: abs(len(values) - about))


def _score_step(low: float, high: float) -> float:
    ticks = nice_ticks(low, high, 6)
    return ticks[1] - ticks[0] if len(ticks) > 1 else max(abs(high - low), 1e-6)


def _fmt(value: float, step: float) -> str:
    """A score with one decimal more than the tick step needs."""
    decimals = max(0, -math.floor(math.log10(step))) + 1 if step > 0 else 4
    return f"{value:.{decimals}f}"


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def chart_svg(chart: ScoreChart, element_id: str = "score-chart") -> str:
    """The chart as an inline SVG element (role img, a <title>, a <desc>, an aria-label)."""
    h = chart.histogram
    counts = h.counts.astype(np.float64)
    width = h.bin_width
    x_low, x_high = chart.x_range
    samples = np.linspace(x_low, x_high, CURVE_POINTS)
    curves = [(name, colour, component.counts_at(samples, width))
              for name, colour, component in (("background", BACKGROUND_COLOUR, chart.background),
                                               ("category", CATEGORY_COLOUR, chart.category))
              if component is not None]
    y_top = max([float(counts.max())] + [float(c.max()) for _, _, c in curves])
    count_ticks = nice_ticks(0.0, y_top, 5)
    y_top = max(y_top, count_ticks[-1])

    def y_of(count: float) -> float:
        return TOP + PLOT_HEIGHT - count / y_top * PLOT_HEIGHT

    title = f"Scores of the {chart.photos} photos in scope, and the cutoff"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(element_id)}" class="score-chart" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{escape(chart.summary)}" '
           f'style="max-width:{WIDTH}px;height:auto;font:11px system-ui,sans-serif">',
           f'<title id="{escape(element_id)}-title">{escape(title)}</title>',
           f'<desc id="{escape(element_id)}-desc">{escape(chart.summary)}</desc>']

    # Grid and count axis.
    out.append('<g class="count-axis" fill="#5b6575" text-anchor="end">')
    for tick in count_ticks:
        y = _n(y_of(tick))
        out.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_WIDTH}" y1="{y}" y2="{y}" stroke="#e6e9ef"/>'
                   f'<text x="{LEFT - 6}" y="{y}" dy="0.32em">{int(round(tick))}</text>')
    out.append(f'<text transform="translate(14 {TOP + PLOT_HEIGHT / 2}) rotate(-90)" text-anchor="middle">photos</text></g>')

    # Bars, one per bin (empty bins have no height).
    out.append(f'<g class="bars" fill="{BAR_COLOUR}">')
    for i, count in enumerate(h.counts):
        x0, x1 = chart.x_of(h.low + i * width), chart.x_of(h.low + (i + 1) * width)
        y = y_of(float(count))
        out.append(f'<rect class="bar" x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0, 0.0))}" '
                   f'height="{_n(TOP + PLOT_HEIGHT - y)}"><title>{int(count)} photo{"" if count == 1 else "s"} '
                   f'from {h.low + i * width:.4f} to {h.low + (i + 1) * width:.4f}</title></rect>')
    out.append('</g>')

    # Fitted components.
    for name, colour, values in curves:
        points = " ".join(f"{_n(chart.x_of(s))},{_n(y_of(v))}" for s, v in zip(samples, values))
        out.append(f'<polyline class="component {name}" fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')

    # Score axis.
    step = _score_step(x_low, x_high)
    baseline = TOP + PLOT_HEIGHT
    out.append(f'<g class="score-axis" fill="#5b6575" text-anchor="middle">'
               f'<line x1="{LEFT}" x2="{LEFT + PLOT_WIDTH}" y1="{baseline}" y2="{baseline}" stroke="#5b6575"/>')
    for tick in nice_ticks(x_low, x_high, 6):
        x = _n(chart.x_of(tick))
        out.append(f'<line x1="{x}" x2="{x}" y1="{baseline}" y2="{baseline + 4}" stroke="#5b6575"/>'
                   f'<text x="{x}" y="{baseline + 15}">{_tick_label(tick, step)}</text>')
    out.append(f'<text x="{LEFT + PLOT_WIDTH / 2}" y="{HEIGHT - 6}">score</text></g>')

    # The cutoff line and what it means.
    if chart.cutoff is not None:
        x = chart.x_of(chart.cutoff)
        right_half = x > LEFT + PLOT_WIDTH * 0.6
        out.append(f'<g class="cutoff"><line id="{escape(element_id)}-cutoff" x1="{_n(x)}" x2="{_n(x)}" y1="{TOP - 4}" '
                   f'y2="{baseline}" stroke="{CUTOFF_COLOUR}" stroke-width="2" stroke-dasharray="5 3" '
                   f'data-score="{chart.cutoff!r}"/>'
                   f'<text x="{_n(x + (-5 if right_half else 5))}" y="{TOP + 8}" fill="{CUTOFF_COLOUR}" '
                   f'text-anchor="{"end" if right_half else "start"}" font-weight="600">{escape(chart.caption)}</text></g>')

    # Legend, in a row above the plot.
    entries = [("bar", BAR_COLOUR, "photos per score bar")]
    entries += [(name, colour, "the other photos (fitted)" if name == "background" else "the category (fitted)")
                for name, colour, _ in curves]
    if chart.cutoff is not None:
        entries.append(("cutoff", CUTOFF_COLOUR, "cutoff"))
    out.append('<g class="legend" fill="#1d2430">')
    x = LEFT
    for kind, colour, label in entries:
        if kind == "bar":
            out.append(f'<rect x="{x}" y="6" width="14" height="10" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="5 3"' if kind == "cutoff" else ""
            out.append(f'<line x1="{x}" x2="{x + 14}" y1="11" y2="11" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 18}" y="11" dy="0.32em">{escape(label)}</text>')
        x += 26 + 6 * len(label)
    out.append('</g></svg>')
    return "".join(out)
