"""Export in a real browser: an archivist downloads a search's matches and an album from their
pages' links (Chromium, driven by Playwright, against a live server; the search and the album
are planted, so no worker or model runs)."""
from __future__ import annotations

import io
import zipfile

import pytest

from tests.e2e.test_browser import browser_page, screenshot  # noqa: F401 (fixtures)
from tests.retrieval.test_export import search_csv, world  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def download(page, link: str) -> bytes:
    with page.expect_download() as started:
        page.click(link)
    return started.value.path().read_bytes()


def test_archivist_downloads_the_matches_and_an_album_from_their_pages(live_server, world, browser_page, screenshot):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    m, b = world["mine"], world["bobs"]
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", "pw-ann")
    page.click("form[action$='/accounts/login/'] button[type=submit]")

    page.goto(f"{url}/search/{world['search'].pk}/")
    expect(page.locator("#export-links")).to_contain_text("export them: CSV · ZIP of originals")
    screenshot("search-with-export-links")
    assert download(page, "#export-links a:has-text('CSV')").decode() == search_csv(world)
    matches = zipfile.ZipFile(io.BytesIO(download(page, "#export-links a:has-text('ZIP')")))
    assert [name.split("-")[0] for name in matches.namelist()] == [str(p.pk) for p in (m[0], b[0], m[1], m[2])]

    page.goto(f"{url}/albums/{world['album'].pk}/")
    screenshot("album-with-export-links")
    album = zipfile.ZipFile(io.BytesIO(download(page, "#export-links a:has-text('XMP sidecars')")))
    assert album.namelist() == [f"{m[0].pk}-Sailboat_Brest.jpg", f"{m[0].pk}-Sailboat_Brest.xmp",
                                f"{b[0].pk}-Régate.jpg", f"{b[0].pk}-Régate.xmp",
                                f"{m[1].pk}-passwd.jpg", f"{m[1].pk}-passwd.xmp"]
