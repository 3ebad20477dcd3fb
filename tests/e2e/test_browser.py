"""The product in a real browser: Chromium (Debian's, driven by Playwright) against a live server
with a real worker and the tiny models. An archivist logs in, creates a library, uploads photos
and one broken file, watches indexing finish, searches, pages through the results, opens a
photo and re-ranks without one proxy.

Every step saves a screenshot under test-artifacts/e2e/ (cleared when the test starts, kept when
it fails, with one more of the page at the moment of failure).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from django.db import connections
from PIL import Image

from assets.models import Asset, RejectedFile
from retrieval.models import Search
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import space_for_profile
from tests.conftest import PROJECT_DIR, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root in a container; the rest keeps Chromium off the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = PROJECT_DIR / "test-artifacts" / "e2e"
PHOTOS = 30  # more than one page of 24 results
PAGE_SIZE = 24
TIMEOUT_MS = 60_000


@pytest.fixture
def browser_page(monkeypatch):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls in
    # between browser steps are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            # expect() has its own default (5 s), too short for a worker that is still loading
            # its models when the uploads are done.
            expect.set_options(timeout=TIMEOUT_MS)
            yield page
        finally:
            browser.close()
            # The test's database calls made while Playwright's loop ran got a connection of
            # their own (Django's connections are per async context): close it, or the test
            # database cannot be dropped at the end of the run.
            connections.close_all()


@pytest.fixture
def screenshot(browser_page, request):
    """`screenshot(name)` saves the page; a failing test also gets `failure.png`."""
    taken: list[str] = []

    def take(name: str) -> None:
        taken.append(name)
        browser_page.screenshot(path=ARTIFACTS / f"{len(taken):02d}-{name}.png", full_page=True)

    yield take
    if getattr(request.node, "call_failed", False):  # set by tests/e2e/conftest.py
        browser_page.screenshot(path=ARTIFACTS / "failure.png", full_page=True)


def photo_files(folder: Path) -> list[Path]:
    """PHOTOS distinct JPEGs and one file that only pretends to be one."""
    folder.mkdir()
    paths = []
    for index in range(PHOTOS):
        pixels = np.random.default_rng(index).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        paths.append(folder / f"harbour-{index:02d}.jpg")
        Image.fromarray(pixels).save(paths[-1], "JPEG")
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return [*paths, broken]


def test_archivist_uploads_indexes_searches_pages_opens_and_refines(
    live_server, start_worker, tiny_model_dir, media_root, make_user, browser_page, screenshot, tmp_path
):
    from playwright.sync_api import expect

    page, url = browser_page, live_server.url
    start_worker(broker="filesystem")
    activate_space(space_for_profile("tiny"))
    make_user("ann")
    files = photo_files(tmp_path / "upload")

    # Log in.
    page.goto(f"{url}/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", "pw-ann")
    screenshot("login")
    page.click("form[action$='/accounts/login/'] button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your photo libraries")

    # Create a library.
    page.fill("form[action$='/libraries/new'] #id_name", "Harbour")
    page.click("form[action$='/libraries/new'] button[type=submit]")
    expect(page.locator("h1")).to_have_text("Harbour")
    screenshot("library-created")

    # Upload the photos and the broken file: the broken one is refused with its reason.
    page.set_input_files("#file-input", [str(f) for f in files])
    wait_for(lambda: RejectedFile.objects.exists() and Asset.objects.count() == PHOTOS, timeout=60,
             message="every upload answered")
    refusal = RejectedFile.objects.get()
    assert (refusal.original_name, refusal.reason) == ("broken.jpg", "corrupt")
    # The page reloads once the uploads are done and lists the refused file with the reason.
    refused = page.locator("details:has-text('refused file') tbody tr")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text(f"broken.jpg{refusal.message}")
    expect(page.locator(".muted").first).to_contain_text(f"{PHOTOS} photos")
    screenshot("uploaded-with-one-refused")

    # Watch indexing finish: the progress line polls the API while photos are pending.
    counts = page.locator("#index-counts")
    expect(counts).to_have_text(f"{PHOTOS} indexed · 0 pending · 0 failed (100%)")
    # Thumbnails are made in the background too; the gallery's waiting tiles turn into them
    # without a reload (the page polls while tiles say "processing…").
    wait_for(lambda: not Asset.objects.filter(status=Asset.Status.PENDING).exists(), timeout=60, message="thumbnails")
    expect(page.locator(".grid img")).to_have_count(PHOTOS)
    expect(page.locator("[data-pending-tile]")).to_have_count(0)
    expect(counts).to_have_text(f"{PHOTOS} indexed · 0 pending · 0 failed (100%)")
    screenshot("indexed")

    # Search.
    page.click("header nav a:has-text('Search')")
    page.fill("#q", "sailboat")
    page.click("form:has(#q) button[type=submit]")
    expect(page.locator("#state-label")).to_have_text("Done")
    search = Search.objects.get(parent=None)
    assert (search.text, search.status, search.result_count) == ("sailboat", "done", PHOTOS)
    # The proxy images are written after the results (placeholders until then, and the page
    # reloads when they are there); each is served and decoded, not a broken image.
    proxies = page.locator(".strip .proxy img")
    expect(proxies).to_have_count(search.k)
    page.wait_for_function("() => [...document.querySelectorAll('.strip .proxy img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    screenshot("search-done-with-proxies")

    # Page through the results, 24 at a time.
    page.select_option("select:near(:text('Per page'))", str(PAGE_SIZE))
    expect(page.locator(".pager .muted")).to_have_text("Page 1 of 2")
    results = page.locator(".grid .result")
    expect(results).to_have_count(PAGE_SIZE)
    expect(results.first).to_contain_text("#1 ·")
    first_page = results.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    screenshot("results-page-1")
    page.click(".pager a:has-text('Next')")
    expect(page.locator(".pager .muted")).to_have_text("Page 2 of 2")
    expect(results).to_have_count(PHOTOS - PAGE_SIZE)
    expect(results.first).to_contain_text(f"#{PAGE_SIZE + 1} ·")
    second_page = results.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert len(set(first_page + second_page)) == PHOTOS  # every photo once, on one of the pages
    screenshot("results-page-2")

    # Open a photo.
    results.first.locator("a").click()
    expect(page.locator("#index-status")).to_contain_text("indexed")
    screenshot("photo")

    # Refine: switch off the first proxy and re-rank (the Refine form's button, not the pager's).
    page.goto(f"{url}/search/{search.pk}/")
    page.uncheck("input[name=enabled_proxies][value='0']")
    page.click('button:has-text("Re-rank") >> nth=0')
    expect(page.locator("text=refined from")).to_be_visible()
    expect(page.locator("#state-label")).to_have_text("Done")
    refined = Search.objects.get(parent=search)
    assert (refined.status, refined.disabled_proxies, refined.result_count) == ("done", [0], PHOTOS)
    expect(page.locator(".strip .proxy.off")).to_have_count(1)
    expect(page.locator(".strip .proxy.off input")).not_to_be_checked()
    screenshot("refined-without-proxy-0")


def test_waiting_thumbnails_appear_without_a_reload(live_server, media_root, make_user, browser_page, screenshot,
                                                    monkeypatch):
    """The gallery's "processing…" tiles turn into thumbnails once they are made: the page polls
    for them; nobody reloads it. Other pages' thumbnails show a placeholder meanwhile."""
    import io

    from playwright.sync_api import expect

    from assets.ingest import ingest_file
    from assets.models import Library
    from assets.renditions import make_renditions
    from assets.tasks import render_pending_photos

    monkeypatch.setattr(render_pending_photos, "delay", lambda: None)  # no worker: this test makes them
    page, url = browser_page, live_server.url
    ann = make_user("ann")
    library = Library.objects.create(name="Harbour", owner=ann)
    ids = []
    for index in range(3):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buffer, "JPEG")
        buffer.seek(0)
        ids.append(ingest_file(library, buffer, f"p{index}.jpg", uploaded_by=ann).asset_id)
    make_renditions(ids[0])

    page.goto(f"{url}/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", "pw-ann")
    page.click("form[action$='/accounts/login/'] button[type=submit]")
    page.goto(f"{url}/libraries/{library.pk}/")
    expect(page.locator(".grid img")).to_have_count(1)
    expect(page.locator("[data-pending-tile]")).to_have_count(2)
    screenshot("tiles-waiting")
    # A waiting thumbnail opened on its own is a placeholder image, not a broken one.
    placeholder = page.request.get(f"{url}/photos/{ids[1]}/thumb")
    assert (placeholder.status, placeholder.headers["content-type"]) == (200, "image/svg+xml")

    for asset_id in ids[1:]:
        make_renditions(asset_id)
    expect(page.locator("[data-pending-tile]")).to_have_count(0)
    expect(page.locator(".grid img")).to_have_count(3)
    for index in range(3):  # served and decoded, not broken images
        expect(page.locator(".grid img").nth(index)).to_have_js_property("complete", True)
        assert page.locator(".grid img").nth(index).evaluate("img => img.naturalWidth") > 0
    screenshot("tiles-made")
