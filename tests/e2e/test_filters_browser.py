"""Search filters in a real browser (Chromium, driven by Playwright, against a live server): an
archivist opens the filter panel, asks for a keyword and a date range, runs a text-only search
and sees only photos inside the filters, with the filters named on the results page. The photos
are planted with vectors; the search runs in the web process when it is queued (no worker), on
the tiny profile's text encoder."""
from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest

from assets.models import Asset
from retrieval.models import Search
from retrieval.search import service as search_service
from retrieval.search.tasks import run_search
from tests.e2e.test_browser import browser_page, screenshot  # noqa: F401 (fixtures)
from tests.retrieval.conftest import ann, library  # noqa: F401 (fixtures)
from tests.retrieval.albums.test_albums import START, TEXT, plant_photos, vectors_scoring
from tests.retrieval.search.test_cutoff import planted_scores
from tests.retrieval.search.test_search_core import text_vector, tiny  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_an_archivist_narrows_a_search_by_keyword_and_date(live_server, tiny, ann, library, browser_page, screenshot,
                                                            monkeypatch):
    from playwright.sync_api import expect

    rng = np.random.default_rng(8)
    scores, _ = planted_scores(rng, 120, 30, separation=4.0)
    assets = plant_photos(tiny, library, vectors_scoring(tiny, text_vector(tiny, TEXT), scores, rng), start=0)
    # Every third photo carries the keyword; photo i was captured i days before START.
    tagged = [a.pk for a in assets[::3]]
    Asset.objects.filter(pk__in=tagged).update(keywords=["harbour", "summer"])
    first_day = (START - timedelta(days=59)).date()
    expected = {a.pk for a in assets[::3] if a.taken_at.date() >= first_day}
    monkeypatch.setattr(search_service, "queue_search", lambda search: run_search(search.pk))

    page, url = browser_page, live_server.url
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", "pw-ann")
    page.click("form[action$='/accounts/login/'] button[type=submit]")
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/search/")
    expect(page.locator("#keywords")).to_be_hidden()  # the panel starts closed
    page.click("#filters > summary")
    page.fill("#keywords", "Harbour")
    page.fill("#taken_from", first_day.isoformat())
    page.click("details:has(#k) > summary")
    page.check("input[name=text_only]")
    page.fill("#q", TEXT)
    screenshot("filters-filled")
    page.click("form button[type=submit]:has-text('Search')")
    page.wait_for_url(re.compile(r"/search/\d+/$"))
    search = Search.objects.get()
    assert search.filters == {"taken_from": first_day.isoformat(), "keywords": ["harbour"]}
    expect(page.locator("#filters-summary")).to_contain_text(
        f"taken from {first_day.isoformat()} (uploaded, for photos without a capture date) · keywords: “harbour”")
    expect(page.locator("#state-count")).to_contain_text(f"{len(expected)} photos ranked")
    shown = {int(re.search(r"/photos/(\d+)/", src).group(1))
             for src in page.locator(".result img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")}
    screenshot("filtered-results")
    assert shown == expected

    # "Change and search again" brings the panel back open with the filters in it.
    page.click("#search-again")
    expect(page.locator("#keywords")).to_have_value("harbour")
    expect(page.locator("#taken_from")).to_have_value(first_day.isoformat())
