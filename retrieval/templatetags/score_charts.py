"""The cutoff as a picture on the pages (`retrieval.search.score_chart`):
`{{ search|search_score_chart }}` is the chart of a search's stored match estimate (None
without one), `{{ chart|chart_svg }}` its inline SVG (escaped by the drawing code)."""
from __future__ import annotations

from django import template
from django.utils.safestring import mark_safe

from ..models import Search
from ..search.score_chart import ScoreChart, chart_of_estimate
from ..search.score_chart import chart_svg as draw

register = template.Library()


@register.filter
def search_score_chart(search: Search) -> ScoreChart | None:
    if search.match_count is None:
        return None
    return chart_of_estimate(search.match_estimate, search.match_count, search.match_cutoff)


@register.filter
def chart_svg(chart: ScoreChart) -> str:
    return mark_safe(draw(chart))  # every text in it is escaped by chart_svg
