"""The pages and the API as an archivist relies on them: what an empty library and one whose
thumbnails are still being made say (and the progress API's numbers behind it), what a search
says it searched by, a search without clear matches (nothing to save or export), "Try again"
repeating exactly the search that failed, albums handing a pinned or removed photo back to its
score, and the admin's search page. tests/e2e/test_pages.py shows the same in a browser."""
from __future__ import annotations

import re

import numpy as np
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from assets.models import Asset, Library, RejectedFile
from assets.renditions import make_renditions
from retrieval.models import (
    Album,
    AlbumPhoto,
    AssetEmbedding,
    EmbeddingSpace,
    IndexingFailure,
    ProxySet,
    Search,
    SearchExample,
    WorkerHeartbeat,
)
from retrieval.search import service as search_service
from retrieval.search.matches import query_bytes
from tests.photos import write_photos
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db

# Album scores of the audit's photos (u = e1, so a photo's score is its first coordinate; values
# a halfvec stores exactly), the state of its row (None: no row), and the buttons it must offer.
AUDIT = [
    (0.875, AlbumPhoto.State.AUTO, "in", ["Pin", "Remove"]),
    (0.75, AlbumPhoto.State.PINNED, "pinned", ["Unpin", "Remove"]),
    (0.625, AlbumPhoto.State.REMOVED, "removed", ["Put back"]),
    (0.5625, None, "in", ["Pin", "Remove"]),  # scored now, not added yet: indexing adds it
    (0.4375, AlbumPhoto.State.PINNED, "pinned", ["Unpin", "Remove"]),
    (0.3125, None, "not in", ["Pin"]),
    (0.25, AlbumPhoto.State.REMOVED, "removed", ["Put back"]),
]
CUTOFF = 0.5
LONG = "Sailboats with red sails moored in the small harbour of Brest at low tide, seen from the quay, 1958"


def unit_vector(score: float) -> list[float]:
    return [score, float(np.sqrt(1 - score**2)), 0.0, 0.0]


@pytest.fixture
def archive(make_user, media_root):
    """Ann (staff) with an empty library and a library of 12 photos, all indexed, 4 of them still
    waiting for their thumbnails; three finished searches; an album; long names everywhere the
    admin lists them."""
    ann = make_user("ann", is_staff=True, is_superuser=True)
    space = EmbeddingSpace.objects.create(
        name="default (3f9a1c2b7d)", profile="default", vlm_model="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        vision_model="facebook/dinov2-small", generator_model="stabilityai/sd-turbo", vlm_dim=2, vision_dim=2,
        fingerprint="f" * 64, is_active=True, is_serving=True)
    empty = Library.objects.create(name="Empty box", owner=ann)
    harbour = Library.objects.create(name="Harbour of Brest, scans 1950-1970 (box 12, folders 1-40)", owner=ann)
    photos = write_photos(media_root, harbour, 12)
    Asset.objects.filter(library=harbour).update(status=Asset.Status.PENDING)
    for photo in photos[:8]:  # the last four wait for their thumbnails
        make_renditions(photo.pk)
    Asset.objects.filter(pk=photos[0].pk).update(
        original_name=f"archive/1958/box 12/folder 3/{LONG} (print 34).tif", camera_make="NIKON CORPORATION",
        camera_model="NIKON D850", keywords=["sailing", "brest", "harbour", "regatta 1958", "fishing boats"])
    scores = [score for score, *_ in AUDIT] + [0.125] * (len(photos) - len(AUDIT))
    AssetEmbedding.objects.bulk_create([AssetEmbedding(asset=p, space=space, vector=unit_vector(s))
                                        for p, s in zip(photos[:11], scores)])
    IndexingFailure.objects.create(asset=photos[11], space=space, error="RuntimeError: " + "out of memory; " * 12)
    WorkerHeartbeat.objects.create(hostname="search@gpu-node-01.archive.example.org", queues=["search", "embed"],
                                   pid=4242, last_seen=timezone.now())
    RejectedFile.objects.create(library=harbour, uploaded_by=ann, reason="corrupt",
                                original_name=f"scans-1958.zip: folder 3/{LONG}.tif",
                                message="The file is damaged or truncated and cannot be read as an image.")

    def done(text="", **fields) -> Search:
        search = Search.objects.create(user=ann, text=text, k=4, status=Search.Status.DONE, progress=100,
                                       space=space, result_count=len(photos), query_vector=query_bytes(np.eye(4)[0]),
                                       **fields)
        store_ranked(search, [(p, s, s / 2, s / 2) for p, s in zip(photos, scores)])
        return search

    no_match = done("zebra", match_count=0, match_cutoff=0.8750001, lambda_used=0.5, aggregation="mean")
    by_example = done(match_count=3, match_cutoff=0.625, lambda_used=1.0, aggregation="mean")
    by_example.positive_assets.set(photos[:2])
    proxies = ProxySet.objects.create(query=LONG.lower(), space=space, generator_key="g", generator_versions={},
                                      seeds=[0, 1, 2, 3], seeds_key="0,1,2,3", prompt=LONG, features=b"")
    done(LONG, match_count=4, match_cutoff=0.5625, lambda_used=0.5, aggregation="mean", proxy_set=proxies,
         timings={"total": 3.2, "proxies_cached": True})
    album = Album.objects.create(user=ann, name=f"{LONG}, for the exhibition catalogue", space=space,
                                 query_vector=query_bytes(np.eye(4)[0]), cutoff=CUTOFF, source_search=by_example)
    AlbumPhoto.objects.bulk_create([AlbumPhoto(album=album, asset=p, score=score, state=state)
                                    for p, (score, state, *_) in zip(photos, AUDIT) if state is not None])
    return {"ann": ann, "space": space, "empty": empty, "harbour": harbour, "photos": photos, "no_match": no_match,
            "by_example": by_example, "album": album}


@pytest.fixture
def queued(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(search_service, "queue_search", lambda search: sent.append(search.pk))
    return sent


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# ------------------------------------------------------------------------------ libraries


def test_an_empty_library_reports_no_percent_and_thumbnails_are_counted_apart_from_indexing(archive):
    client = api(archive["ann"])
    empty = client.get(f"/api/libraries/{archive['empty'].pk}/progress/").json()
    nothing = {"total": 0, "pending": 0, "failed": 0, "percent": None}
    assert empty == {"space": "default (3f9a1c2b7d)", **nothing, "indexed": 0, "thumbnails": {**nothing, "made": 0},
                     "searchable": False, "reindexing": None}

    # Every photo indexed (one failed), four still waiting for their thumbnails.
    harbour = client.get(f"/api/libraries/{archive['harbour'].pk}/progress/").json()
    assert harbour == {"space": "default (3f9a1c2b7d)", "total": 12, "indexed": 11, "pending": 0, "failed": 1,
                       "percent": 100, "thumbnails": {"total": 12, "made": 8, "pending": 4, "failed": 0, "percent": 66},
                       "searchable": True, "reindexing": None}


def test_the_library_list_and_the_library_page_count_the_same_photos(archive, client):
    Asset.objects.filter(pk=archive["photos"][7].pk).update(status=Asset.Status.FAILED)  # could not be read
    client.force_login(archive["ann"])
    home = client.get("/").content.decode()
    cells = dict(re.findall(r'>([^<>]+)</a></td>\s*<td>ann</td>\s*<td class="photo-count">(.*?)</td>', home, re.S))
    assert {name: " ".join(re.sub(r"<[^>]+>", " ", cell).split()) for name, cell in cells.items()} == {
        "Empty box": "No photos yet", archive["harbour"].name: "12 (4 thumbnails being made)"}
    page = client.get(f"/libraries/{archive['harbour'].pk}/").content.decode()
    assert "Owner: ann · 12 photos" in page


# ------------------------------------------------------------------------------ searches


def _page(client, search: Search) -> str:
    return client.get(f"/search/{search.pk}/").content.decode()


def test_the_search_page_says_what_each_kind_of_search_searched_by(archive, client):
    ann, photos, space = archive["ann"], archive["photos"], archive["space"]
    text = dict(user=ann, text="sailboat", k=4, space=space)
    searches = {
        "text and 4 proxy images (seed 0) · λ=0.50 (images averaged)":
            Search.objects.create(**text, status="done", lambda_used=0.5, aggregation="mean"),
        "text and 4 proxy images (seed 7) · λ=0.30 (set by hand)":
            Search.objects.create(**{**text, "seed": 7}, lambda_override=0.3),
        "text and 4 proxy images (seed 0) · λ=0.62 (trained aggregator)":
            Search.objects.create(**text, status="done", lambda_used=0.62, aggregation="trained"),
        "text only (no proxy images)":
            Search.objects.create(**text, text_only=True, status="done", lambda_used=0.0, aggregation="none"),
        "text only: every proxy switched off":
            Search.objects.create(**text, disabled_proxies=[0, 1, 2, 3], status="done", lambda_used=0.0,
                                  aggregation="none"),
        "by example: 2 photos": archive["by_example"],
    }
    refined = Search.objects.create(**text, disabled_proxies=[1], negative_text="toy boat", status="done",
                                    lambda_used=0.5, aggregation="mean")
    refined.positive_assets.set([photos[3]])
    refined.negative_assets.set([photos[9]])
    SearchExample.objects.create(search=refined, kind=SearchExample.Kind.POSITIVE, file="search-examples/x.jpg")
    searches["text and 3 of 4 proxy images (seed 0) · more like 2 photos · less like 1 photo · not “toy boat” · "
             "λ=0.50 (images averaged)"] = refined
    off_with_example = Search.objects.create(**text, disabled_proxies=[0, 1, 2, 3], status="done", lambda_used=0.5,
                                             aggregation="mean")
    off_with_example.positive_assets.set([photos[3]])
    searches["every proxy switched off · more like 1 photo · λ=0.50 (images averaged)"] = off_with_example

    client.force_login(ann)
    for words, search in searches.items():
        page = _page(client, search)
        assert f'<p class="muted" style="margin-top:0" id="searches-by">{words}</p>' in page, words
        assert "K=" not in page and "(none)" not in page


def test_a_search_without_clear_matches_offers_neither_the_matches_nor_an_album(archive, client):
    ann, search = archive["ann"], archive["no_match"]
    client.force_login(ann)
    page = _page(client, search)
    assert "No clear matches." in page
    for offer in ("show only the matches", "Save as album", "export them", "the matches first", "about 0"):
        assert offer not in page, offer
    only = client.get(f"/search/{search.pk}/?matches_only=1").content.decode()
    assert "None of the 12 ranked photos is a clear match." in only and "no indexed photos yet" not in only

    refused = client.post(f"/search/{search.pk}/save-album", {"name": "Zebras"}, follow=True)
    assert "This search has no clear matches, so there is nothing to keep as an album" in refused.content.decode()
    answer = api(ann).post("/api/albums/", {"search": search.pk}, format="json")
    assert answer.status_code == 400 and answer.json() == {"search": [
        "This search has no clear matches, so there is nothing to keep as an album; refine it until it finds some."]}
    assert Album.objects.filter(source_search=search).count() == 0


def _try_again(client, search: Search) -> Search:
    """Press "Try again" on a failed search's page: post its form as a browser would."""
    page = _page(client, search)
    form = re.search(r'<form method="post" action="([^"]+)" id="try-again">(.*?)</form>', page, re.S)
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(2)):
        fields.setdefault(name, []).append(value)
    response = client.post(form.group(1), fields)
    assert response.status_code == 302, response.content.decode()
    return Search.objects.latest("pk")


def test_try_again_repeats_exactly_the_search_that_failed(archive, client, queued, django_capture_on_commit_callbacks):
    ann, photos, harbour = archive["ann"], archive["photos"], archive["harbour"]
    client.force_login(ann)
    failed = dict(user=ann, k=3, seed=5, status="failed", error="The worker stopped.")
    by_example = Search.objects.create(**failed, text="")
    by_example.positive_assets.set(photos[:2])
    text_only = Search.objects.create(**failed, text="sailboat", text_only=True)
    text_only.libraries.set([harbour])
    weighted = Search.objects.create(**failed, text="sailboat", lambda_override=0.3)
    parent = archive["no_match"]
    refined = Search.objects.create(**failed, text="zebra", parent=parent, disabled_proxies=[1], negative_text="horse")
    refined.negative_assets.set([photos[9]])

    with django_capture_on_commit_callbacks(execute=True):
        again = [_try_again(client, search) for search in (by_example, text_only, weighted, refined)]
    inputs = [(s.text, s.k, s.seed, s.text_only, s.lambda_override, list(s.libraries.all()),
               list(s.positive_assets.order_by("pk")), list(s.negative_assets.all()), s.disabled_proxies, s.negative_text)
              for s in again]
    assert inputs == [
        ("", 3, 5, False, None, [], photos[:2], [], [], ""),
        ("sailboat", 3, 5, True, None, [harbour], [], [], [], ""),
        ("sailboat", 3, 5, False, 0.3, [], [], [], [], ""),
        ("zebra", 3, 5, False, None, [], [], [photos[9]], [1], "horse"),
    ]
    assert again[3].parent == refined  # a refinement of the same inputs, not a new search of the text
    assert queued == [s.pk for s in again]


# ------------------------------------------------------------------------------ albums


def test_a_pinned_or_removed_photo_goes_back_to_its_score(archive, client):
    album, photos = archive["album"], archive["photos"]
    ann = api(archive["ann"])
    url = f"/api/albums/{album.pk}/automatic/"

    back_in = ann.post(url, {"asset": photos[2].pk}, format="json")  # removed, scores 0.625 >= 0.5
    assert back_in.status_code == 200
    assert {k: back_in.json()[k] for k in ("asset_id", "score", "state")} == {
        "asset_id": photos[2].pk, "score": 0.625, "state": "auto"}
    unpinned = ann.post(url, {"asset": photos[4].pk}, format="json")  # pinned, scores 0.4375 < 0.5
    assert unpinned.status_code == 204 and not AlbumPhoto.objects.filter(album=album, asset=photos[4]).exists()
    still_in = ann.post(url, {"asset": photos[1].pk}, format="json")  # pinned, scores 0.75
    assert (still_in.status_code, still_in.json()["state"]) == (200, "auto")
    not_indexed = ann.post(url, {"asset": photos[11].pk}, format="json")  # no vector: out until indexed
    assert not_indexed.status_code == 204
    assert ann.post(url, {"asset": 10**9}, format="json").json() == {"asset": ["No such photo in this album's libraries."]}
    assert [p["asset_id"] for p in ann.get(f"/api/albums/{album.pk}/photos/?sort=uploaded").json()["results"]] == [
        photos[0].pk, photos[1].pk, photos[2].pk]

    client.force_login(archive["ann"])
    page = client.post(f"/albums/{album.pk}/photos/{photos[0].pk}/state", {"state": "pinned"}, follow=True)
    assert AlbumPhoto.objects.get(album=album, asset=photos[0]).state == "pinned"
    assert 'value="auto"><input type="hidden" name="next" value="/albums/' in page.content.decode()  # "Unpin"


# ------------------------------------------------------------------------------ admin


def test_the_admin_search_page_shows_no_raw_query_vector(archive, client):
    client.force_login(archive["ann"])
    page = client.get(f"/admin/retrieval/search/{archive['no_match'].pk}/change/").content.decode()
    assert "Query vector" not in page and "\\x00" not in page
    assert page.count("proxies_cached") <= 1
    spaces = client.get("/admin/retrieval/embeddingspace/").content.decode()
    assert "11 / 12 indexed, 1 failed (100% done)" in spaces
