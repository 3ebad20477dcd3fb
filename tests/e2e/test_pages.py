"""The pages as an archivist reads them, in a real browser (Chromium, driven by Playwright,
against a live server; everything is planted, so no worker or model runs): what an empty library
and one whose thumbnails are still being made say, a search with no clear match, a search by
example, the album audit's buttons for each kind of photo, the admin's lists at 1280 px, and
every page at a phone's 390 px.

Screenshots go to test-artifacts/e2e/ (cleared when a browser test starts).
"""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.models import Album, AlbumPhoto
from tests.e2e.test_browser import ARTIFACTS, browser_page, screenshot  # noqa: F401 (fixtures)
from tests.test_archivist_pages import AUDIT, archive  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_in(page, url: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", "pw-ann")
    page.click("form[action$='/accounts/login/'] button[type=submit]")
    page.wait_for_url(f"{url}/")


def test_empty_and_processing_libraries_say_what_they_hold(live_server, archive, browser_page, screenshot):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    log_in(page, url)
    rows = page.locator("table tbody tr")
    expect(rows.filter(has_text="Empty box").locator("td").nth(2)).to_have_text("No photos yet")
    expect(rows.filter(has_text="Harbour").locator("td").nth(2)).to_have_text("12 (4 thumbnails being made)")
    screenshot("library-list")

    page.goto(f"{url}/libraries/{archive['empty'].pk}/")
    expect(page.locator("#thumb-counts")).to_have_text("No photos yet")
    expect(page.locator("#index-counts")).to_have_text("No photos yet")
    for bar in ("#thumb-bar", "#index-bar"):  # an empty bar, not a full one
        assert page.locator(bar).evaluate("bar => bar.getBoundingClientRect().width") == 0
    screenshot("library-empty")

    # Indexed through and through, thumbnails not: the two say so separately.
    page.goto(f"{url}/libraries/{archive['harbour'].pk}/")
    expect(page.locator("#thumb-counts")).to_have_text("8 made · 4 being made · 0 failed (66%)")
    expect(page.locator("#index-counts")).to_have_text("11 indexed · 0 pending · 1 failed (100%)")
    expect(page.locator("[data-pending-tile]")).to_have_count(4)
    screenshot("library-thumbnails-being-made")


def test_a_search_without_clear_matches_offers_nothing_to_do_with_matches(live_server, archive, browser_page,
                                                                          screenshot):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    search = archive["no_match"]
    log_in(page, url)
    page.goto(f"{url}/search/{search.pk}/")
    expect(page.locator("#match-count")).to_contain_text("No clear matches.")
    for absent in ("a:has-text('show only the matches')", "#save-album", "text=Save as album", "#export-links",
                   "text=the matches first"):
        expect(page.locator(absent)).to_have_count(0)
    expect(page.locator(".results-line .muted")).to_have_text("by score; hover a photo for its text and image parts")
    expect(page.locator(".grid .result")).to_have_count(12)  # the ranking is still there
    screenshot("search-without-matches")

    page.goto(f"{url}/search/{search.pk}/?matches_only=1")
    expect(page.locator("#no-results")).to_have_text("None of the 12 ranked photos is a clear match. "
                                                     "Show all of them, by score.")
    page.click("#no-results a")
    expect(page.locator(".grid .result")).to_have_count(12)
    screenshot("search-without-matches-matches-only")


def test_a_search_by_example_says_so(live_server, archive, browser_page, screenshot):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    log_in(page, url)
    page.goto(f"{url}/search/{archive['by_example'].pk}/")
    expect(page.locator("h1")).to_have_text("Search by example")
    expect(page.locator("#searches-by")).to_have_text("by example: 2 photos")
    expect(page.locator("#match-count")).to_have_text("about 3 matching photos")
    expect(page.locator("#save-album button")).to_have_text("Save as album")
    screenshot("search-by-example")


def test_the_audit_offers_what_each_photo_allows_and_the_album_is_deleted_only_on_confirmation(
        live_server, archive, browser_page, screenshot):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    album, photos = archive["album"], archive["photos"]
    log_in(page, url)
    page.goto(f"{url}/albums/{album.pk}/audit")
    for photo, (score, _, label, buttons) in zip(photos, AUDIT):
        row = page.locator(f".result[data-asset='{photo.pk}']")
        # Scores as the page writes them: every digit of their float32 value (retrieval.search.scores).
        expect(row.locator(".meta")).to_contain_text(f"{np.float32(score)} · {label}")
        expect(row.locator("button")).to_have_text(buttons)
    screenshot("audit")

    # Unpinning the photo below the cutoff hands it back to its score: out of the album.
    below = page.locator(f".result[data-asset='{photos[4].pk}']")
    below.locator("button:has-text('Unpin')").click()
    expect(page.locator(".messages")).to_contain_text("It scores below the cutoff, so it is not in the album now.")
    expect(below.locator(".meta")).to_contain_text(f"{np.float32(0.4375)} · not in")
    expect(below.locator("button")).to_have_text(["Pin"])
    # Putting back the removed photo above the cutoff brings it in.
    above = page.locator(f".result[data-asset='{photos[2].pk}']")
    above.locator("button:has-text('Put back')").click()
    expect(above.locator(".meta")).to_contain_text(f"{np.float32(0.625)} · in")
    assert dict(AlbumPhoto.objects.filter(album=album).values_list("asset_id", "state")) == {
        photos[0].pk: "auto", photos[1].pk: "pinned", photos[2].pk: "auto", photos[6].pk: "removed"}
    screenshot("audit-after-unpin-and-put-back")

    # "Delete album" is no primary button, and nothing is deleted until it is confirmed.
    page.goto(f"{url}/albums/{album.pk}/")
    delete = page.locator("#delete-album button")
    assert delete.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(255, 255, 255)"
    page.once("dialog", lambda dialog: dialog.dismiss())
    delete.click()
    expect(page.locator("h1")).to_have_text(album.name)
    assert Album.objects.filter(pk=album.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(page.locator(".messages")).to_contain_text("deleted; its photos stay in their libraries")
    assert not Album.objects.filter(pk=album.pk).exists()


ADMIN_LISTS = ["assets/library", "assets/asset", "assets/rejectedfile", "retrieval/embeddingspace", "retrieval/search",
               "retrieval/proxyset", "retrieval/album", "retrieval/indexingfailure", "retrieval/assetembedding",
               "retrieval/workerheartbeat"]


def test_admin_lists_fit_a_1280_px_screen(live_server, archive, browser_page, screenshot):
    page, url = browser_page, live_server.url
    log_in(page, url)
    wide = {}
    for name in ADMIN_LISTS:
        page.goto(f"{url}/admin/{name}/")
        # The list scrolls inside its own box when too wide: compare the box's content with it.
        overflow = page.locator("#changelist .results").evaluate("box => box.scrollWidth - box.clientWidth")
        if overflow > 0 or page.evaluate("document.documentElement.scrollWidth > window.innerWidth"):
            wide[name] = overflow
        screenshot(f"admin-{name.replace('/', '-')}")
    assert wide == {}


def test_every_page_fits_a_phone_screen(live_server, archive, browser_page):
    page, url = browser_page, live_server.url
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, url)
    album, harbour = archive["album"], archive["harbour"]
    wide = {}
    for path in ["/", f"/libraries/{harbour.pk}/", f"/libraries/{harbour.pk}/photos/{archive['photos'][0].pk}/",
                 "/search/", f"/search/{archive['no_match'].pk}/", f"/search/{archive['by_example'].pk}/",
                 "/albums/", f"/albums/{album.pk}/", f"/albums/{album.pk}/audit"]:
        page.goto(url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            wide[path] = overflow
        page.screenshot(path=ARTIFACTS / f"phone-{path.strip('/').replace('/', '-') or 'home'}.png", full_page=True)
    assert wide == {}
