"""Album sharing in a real browser: the owner shares an album from its page; a member of one of
its libraries finds it in their album list, marked as shared, and reads it without any control
to change it, with only the photos of the libraries they may see (Chromium, driven by Playwright,
against a live server; the album is planted, so no worker or model runs)."""
from __future__ import annotations

import pytest

from tests.e2e.test_browser import browser_page, screenshot  # noqa: F401 (fixtures)
from tests.retrieval.test_export import world  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_in(page, url: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("form[action$='/accounts/login/'] button[type=submit]")


def test_the_owner_shares_an_album_and_a_member_reads_it_with_only_their_photos(
        live_server, world, browser_page, screenshot):
    from playwright.sync_api import expect

    from retrieval.models import Album

    page, url, album = browser_page, live_server.url, world["album"]
    log_in(page, url, "bob")  # a member of one of its libraries (he owns "Bob's boats"), before it is shared
    page.goto(f"{url}/albums/")
    expect(page.locator("body")).not_to_contain_text("Boats & sails!")

    log_in(page, url, "ann")
    page.goto(f"{url}/albums/{album.pk}/")
    expect(page.locator(".result")).to_have_count(3)  # her two libraries: two by score, one pinned
    page.click("#share-album button:has-text('Share with library members')")
    expect(page.locator("#share-album")).to_contain_text("Shared read-only with the members of its libraries")
    screenshot("owner-shared-the-album")
    assert Album.objects.get(pk=album.pk).shared

    log_in(page, url, "bob")
    page.goto(f"{url}/albums/")
    row = page.locator("tr", has_text="Boats & sails!")
    expect(row).to_contain_text("shared by ann")
    row.locator("a", has_text="Boats & sails!").click()
    expect(page.locator("#album-shared-by")).to_have_text("shared by ann (read-only)")
    photos = page.locator(".result")
    expect(photos).to_have_count(1)  # only the photo of his library; Ann's harbour stays hers
    expect(photos.locator("a")).to_have_attribute("href", f"/libraries/{world['boats'].pk}/photos/{world['bobs'][0].pk}/")
    expect(page.locator("#album-count")).to_contain_text("1 photo")
    expect(page.locator("#delete-album")).to_have_count(0)
    expect(page.locator("#share-album")).to_have_count(0)
    expect(page.locator(".result button")).to_have_count(0)  # no pin or remove
    screenshot("member-reads-the-shared-album")

    log_in(page, url, "ann")
    page.goto(f"{url}/albums/{album.pk}/")
    page.click("#share-album button:has-text('Stop sharing')")
    expect(page.locator("#share-album")).to_contain_text("Share with library members")
    log_in(page, url, "bob")
    response = page.goto(f"{url}/albums/{album.pk}/")
    assert response.status == 404
