"""The cutoff as a picture on real Postgres: the histogram a search stores with its estimate, the
chart on the search page and the album audit (no JavaScript: it is in the HTML), and the API's
`match_estimate`."""
from __future__ import annotations

import re

import numpy as np
import pytest

from retrieval.albums.albums import create_album_from_search
from retrieval.models import Search
from retrieval.search.cutoff import DISPLAY_BINS
from retrieval.search.matches import query_from_bytes
from retrieval.search.ranking.pgvector import scope_scores
from retrieval.search.score_chart import LEFT, PLOT_WIDTH, chart_of_estimate
from tests.retrieval.albums.test_albums import TEXT, category  # noqa: F401 (fixture)
from tests.retrieval.search.test_search_core import tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def _cutoff_x(html: str) -> float:
    return float(re.search(r'<line id="score-chart-cutoff" x1="([0-9.]+)"', html).group(1))


def test_a_search_stores_the_histogram_of_its_whole_scope(category):
    search = category["search"]
    stored = search.match_estimate
    counts = stored["histogram"]["counts"]
    assert len(counts) == DISPLAY_BINS and sum(counts) == stored["photos"] == 400
    # The bars span the scope's scores: the last match and the best photo lie inside.
    low, high = stored["histogram"]["low"], stored["histogram"]["high"]
    assert low < search.match_cutoff <= high + 1e-6
    assert counts[0] > 0 and counts[-1] > 0


def test_the_search_page_draws_the_chart_in_its_html(category, ann, client):
    search = category["search"]
    client.force_login(ann)
    html = client.get(f"/search/{search.pk}/").content.decode()
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" id="score-chart"') == 1
    assert len(re.findall(r'<rect class="bar"', html)) == DISPLAY_BINS
    chart = chart_of_estimate(search.match_estimate, search.match_count, search.match_cutoff)
    assert _cutoff_x(html) == pytest.approx(chart.x_of(search.match_cutoff), abs=0.01)
    assert f">about {search.match_count} matches</text>" in html
    assert 'class="component category"' in html and 'class="component background"' in html
    assert f'<figcaption class="muted" id="score-chart-summary" style="font-size:.85rem">{chart.summary}</figcaption>' in html


def test_a_search_counted_before_histograms_were_kept_shows_no_chart(category, ann, client):
    search = category["search"]
    old = {k: v for k, v in search.match_estimate.items() if k != "histogram"}
    Search.objects.filter(pk=search.pk).update(match_estimate=old)
    client.force_login(ann)
    html = client.get(f"/search/{search.pk}/").content.decode()
    assert f"about {search.match_count} matching photos" in html and "score-chart" not in html
    assert client.get(f"/api/searches/{search.pk}/").json()["match_estimate"]["histogram"] is None


def test_the_api_gives_the_estimate_behind_the_count(category, ann, client):
    search = category["search"]
    stored = search.match_estimate
    client.force_login(ann)
    body = client.get(f"/api/searches/{search.pk}/").json()
    assert body["match_estimate"] == {
        "photos": 400,
        "mixture": {
            "background": {"mean": stored["background_mean"], "std": stored["background_std"],
                           "weight": round(1 - stored["category_weight"], 6)},
            "category": {"mean": stored["category_mean"], "std": stored["category_std"],
                         "weight": stored["category_weight"]},
        },
        "histogram": {"low": stored["histogram"]["low"], "high": stored["histogram"]["high"],
                      "counts": stored["histogram"]["counts"]},
    }
    assert 0 < stored["category_weight"] < 0.5
    # Not counted yet: null.
    Search.objects.filter(pk=search.pk).update(match_count=None)
    assert client.get(f"/api/searches/{search.pk}/").json()["match_estimate"] is None
    schema = client.get("/api/schema/?format=json").json()["components"]["schemas"]
    assert set(schema["MatchEstimate"]["properties"]) == {"photos", "mixture", "histogram"}
    assert set(schema["ScoreHistogram"]["properties"]) == {"low", "high", "counts"}


def test_the_album_audit_draws_its_scope_with_the_album_cutoff(category, ann, library, client):
    search = category["search"]
    album = create_album_from_search(ann, search, TEXT)
    client.force_login(ann)
    html = client.get(f"/albums/{album.pk}/audit").content.decode()
    assert html.count('id="score-chart"') == 1
    assert len(re.findall(r'<rect class="bar"', html)) == DISPLAY_BINS
    # The album's photos are the scope's photos at or above its cutoff: the search's matches.
    assert f">{search.match_count} photos at or above it</text>" in html
    # Its own fit on the same 400 scores finds the category too.
    assert 'class="component category"' in html
    bars = np.array(re.findall(r"<title>(\d+) photos? from [0-9.-]+ to [0-9.-]+</title>", html), dtype=int)
    assert len(bars) == DISPLAY_BINS and bars.sum() == 400
    # The axis runs from the scope's lowest to its highest score: the line stands where the
    # album's cutoff falls between them.
    fast = scope_scores(album.space, query_from_bytes(album.query_vector), [library.pk]).fast
    low, high = fast.min(), fast.max()
    assert _cutoff_x(html) == pytest.approx(LEFT + (album.cutoff - low) / (high - low) * PLOT_WIDTH, abs=0.01)
