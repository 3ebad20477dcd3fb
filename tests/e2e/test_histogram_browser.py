"""The cutoff as a picture in a real browser: the search page and the album audit show the
histogram of the scope's scores with its cutoff line, and so does a browser with JavaScript
switched off (Chromium, driven by Playwright, against a live server; the 400 photos and the
search are planted and the search runs in-process, so no worker runs)."""
from __future__ import annotations

import pytest

from retrieval.albums.albums import create_album_from_search
from retrieval.search.cutoff import DISPLAY_BINS
from tests.e2e.test_browser import ARTIFACTS, browser_page, screenshot  # noqa: F401 (fixtures)
from tests.e2e.test_pages import log_in
from tests.retrieval.albums.test_albums import TEXT, category  # noqa: F401 (fixture)
from tests.retrieval.conftest import ann, library  # noqa: F401 (fixtures)
from tests.retrieval.search.test_search_core import tiny  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def check_chart(page, caption: str) -> None:
    from playwright.sync_api import expect

    chart = page.locator("svg#score-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(DISPLAY_BINS)
    expect(chart.locator("#score-chart-cutoff")).to_have_count(1)  # a vertical line: no width, so not "visible"
    expect(chart.locator(".cutoff text")).to_have_text(caption)
    expect(chart.locator("polyline.component.category")).to_have_count(1)
    expect(page.locator("#score-chart-summary")).to_contain_text(caption)
    # Drawn at a readable size: the chart spans the card, not a thumbnail.
    box = chart.bounding_box()
    assert box["width"] >= 500 and box["height"] >= 180, box
    # The line stands inside the plot and runs down most of its height.
    line = chart.locator("#score-chart-cutoff").bounding_box()
    assert box["x"] < line["x"] < box["x"] + box["width"] and line["height"] > box["height"] / 2, (box, line)


def test_the_search_page_and_the_album_audit_show_the_cutoff_as_a_picture(
    live_server, category, ann, browser_page, screenshot
):
    page, url = browser_page, live_server.url
    search = category["search"]
    album = create_album_from_search(ann, search, TEXT)
    log_in(page, url)

    page.goto(f"{url}/search/{search.pk}/")
    check_chart(page, f"about {search.match_count} matches")
    screenshot("search-score-chart")

    page.goto(f"{url}/albums/{album.pk}/audit")
    check_chart(page, f"{search.match_count} photos at or above it")
    screenshot("album-audit-score-chart")

    # Without JavaScript the pages are the same server-rendered HTML: the chart is there.
    context = page.context.browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        plain = context.new_page()
        log_in(plain, url)
        plain.goto(f"{url}/search/{search.pk}/")
        check_chart(plain, f"about {search.match_count} matches")
        plain.screenshot(path=ARTIFACTS / "no-javascript-search-score-chart.png", full_page=True)
        plain.goto(f"{url}/albums/{album.pk}/audit")
        check_chart(plain, f"{search.match_count} photos at or above it")
    finally:
        context.close()
