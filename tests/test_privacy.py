"""Two users: everything user B tries on user A's library, photos, files, searches, results and
albums is denied (404 for what B cannot see, so nothing leaks) and no count includes A's data."""
from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from PIL import Image
from rest_framework.test import APIClient

from assets.models import Asset, Library, Rendition
from retrieval.models import Album, AlbumPhoto, Search
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db


@pytest.fixture
def a_world(make_user, media_root):
    ann, bob = make_user("ann"), make_user("bob")
    library = Library.objects.create(name="Ann's private archive", owner=ann)
    (media_root / "x").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(media_root / "x" / "p.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(media_root / "x" / "t.webp")
    photo = Asset.objects.create(library=library, sha256="a" * 64, file="x/p.jpg", status=Asset.Status.READY)
    Rendition.objects.create(asset=photo, name="thumb", file="x/t.webp", width=8, height=8)
    search = Search.objects.create(user=ann, text="boat", k=4, status=Search.Status.DONE, result_count=1, match_count=1)
    search.libraries.set([library])
    store_ranked(search, [(photo, 0.9, 0.4, 0.5)])
    album = Album.objects.create(user=ann, name="Boats", query_vector=b"", cutoff=0.1, source_search=search)
    album.libraries.set([library])
    AlbumPhoto.objects.create(album=album, asset=photo, score=0.9)
    return {"ann": ann, "bob": bob, "library": library, "photo": photo, "search": search, "album": album}


def test_pages_and_files_of_another_user_do_not_exist_for_bob(a_world):
    lib, photo, search, album = a_world["library"], a_world["photo"], a_world["search"], a_world["album"]
    bob = Client()
    bob.force_login(a_world["bob"])
    for url in (f"/libraries/{lib.pk}/", f"/libraries/{lib.pk}/photos/{photo.pk}/", f"/photos/{photo.pk}/file",
                f"/photos/{photo.pk}/thumb", f"/search/{search.pk}/", f"/search/{search.pk}/proxies/0",
                f"/albums/{album.pk}/", f"/albums/{album.pk}/audit", f"/libraries/{lib.pk}/delete"):
        assert bob.get(url).status_code == 404, url
    for url, data in ((f"/libraries/{lib.pk}/rename", {"name": "mine"}), (f"/libraries/{lib.pk}/delete", {}),
                      (f"/libraries/{lib.pk}/members", {"username": "bob", "role": "editor"}),
                      (f"/search/{search.pk}/refine", {}), (f"/albums/{album.pk}/delete", {})):
        assert bob.post(url, data).status_code == 404, url
    assert Library.objects.get(pk=lib.pk).name == "Ann's private archive" and not lib.memberships.exists()
    assert Album.objects.filter(pk=album.pk).exists()
    # Nothing of Ann's shows up in Bob's own pages, not even as a count.
    for url in ("/", "/search/", "/albums/"):
        page = bob.get(url).content.decode()
        assert "private archive" not in page and "Boats" not in page, url
    # Bob is no staff member: the admin is closed to him.
    assert bob.get(f"/admin/assets/asset/{photo.pk}/change/").status_code == 302


def test_the_api_of_another_user_does_not_exist_for_bob(a_world):
    lib, photo, search, album = a_world["library"], a_world["photo"], a_world["search"], a_world["album"]
    bob = APIClient()
    bob.force_authenticate(a_world["bob"])
    for url in (f"/api/libraries/{lib.pk}/", f"/api/libraries/{lib.pk}/progress/", f"/api/libraries/{lib.pk}/rejected/",
                f"/api/libraries/{lib.pk}/members/", f"/api/assets/{photo.pk}/", f"/api/assets/{photo.pk}/index-status/",
                f"/api/searches/{search.pk}/", f"/api/searches/{search.pk}/results/", f"/api/albums/{album.pk}/",
                f"/api/albums/{album.pk}/photos/"):
        response = bob.get(url)
        assert response.status_code == 404, url
        assert "private archive" not in response.content.decode(), url
    assert bob.patch(f"/api/libraries/{lib.pk}/", {"name": "x"}, format="json").status_code == 404
    assert bob.delete(f"/api/libraries/{lib.pk}/").status_code == 404
    assert bob.delete(f"/api/assets/{photo.pk}/").status_code == 404
    assert bob.post(f"/api/libraries/{lib.pk}/upload/", {}, format="multipart").status_code == 404
    assert bob.post(f"/api/searches/{search.pk}/refine/", {}, format="json").status_code == 404
    assert bob.post(f"/api/albums/{album.pk}/pin/", {"asset": photo.pk}, format="json").status_code == 404
    assert Asset.objects.filter(pk=photo.pk).exists()
    # Lists and counts: Bob's view of the world holds nothing of Ann's.
    assert bob.get("/api/libraries/").json() == []
    assert bob.get("/api/assets/").json()["count"] == 0
    assert bob.get(f"/api/assets/?library={lib.pk}").json()["count"] == 0
    assert bob.get("/api/searches/").json()["count"] == 0
    albums = bob.get("/api/albums/").json()
    assert (albums["count"] if isinstance(albums, dict) else len(albums)) == 0
    # A search over Ann's library is refused like one over a library that does not exist.
    refused = bob.post("/api/searches/", {"text": "boat", "libraries": [lib.pk]}, format="json")
    assert refused.status_code == 400 and refused.json() == {"libraries": [f"No such library: {lib.pk}."]}


def test_files_go_out_through_the_web_server_after_the_check_when_configured(a_world, settings):
    settings.CLETIR_SENDFILE_HEADER = "X-Accel-Redirect"
    settings.CLETIR_SENDFILE_PREFIX = "/protected-media/"
    ann = Client()
    ann.force_login(a_world["ann"])
    response = ann.get(f"/photos/{a_world['photo'].pk}/file")
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == "/protected-media/x/p.jpg"
    assert response.content == b"" and response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, max-age=3600"
    bob = Client()
    bob.force_login(a_world["bob"])
    denied = bob.get(f"/photos/{a_world['photo'].pk}/file")
    assert denied.status_code == 404 and "X-Accel-Redirect" not in denied


def test_a_member_removed_from_a_library_loses_every_read_of_it_at_once(a_world, make_user):
    """Carol was a viewer of Ann's library, searched it, used a photo of it as an example and
    saved an album. Removed from the library, she keeps her searches and albums, but nothing
    of the library reads through them any more: pages, API, files, albums, stored results."""
    from assets.models import LibraryMembership

    lib, photo = a_world["library"], a_world["photo"]
    photo.original_name = "harbour-secret.jpg"
    photo.save(update_fields=["original_name"])
    carol = make_user("carol")
    membership = LibraryMembership.objects.create(library=lib, user=carol, role=LibraryMembership.Role.VIEWER)
    search = Search.objects.create(user=carol, text="boat", k=4, status=Search.Status.DONE, result_count=1,
                                   match_count=1, match_cutoff=0.5)
    search.positive_assets.set([photo])
    store_ranked(search, [(photo, 0.9, 0.4, 0.5)])
    album = Album.objects.create(user=carol, name="Carol's boats", query_vector=b"", cutoff=0.1, source_search=search)
    AlbumPhoto.objects.create(album=album, asset=photo, score=0.9)
    api, page = APIClient(), Client()
    api.force_authenticate(carol)
    page.force_login(carol)

    def reads() -> dict:
        results = api.get(f"/api/searches/{search.pk}/results/").json()
        matches = api.get(f"/api/searches/{search.pk}/results/?matches_only=1").json()
        detail = api.get(f"/api/searches/{search.pk}/").json()
        html = page.get(f"/search/{search.pk}/").content.decode() + page.get(f"/albums/{album.pk}/").content.decode()
        return {
            "results": [r["asset_id"] for r in results["results"]], "matches": matches["count"],
            "examples": detail["positive_assets"],
            "album": [p["asset_id"] for p in api.get(f"/api/albums/{album.pk}/photos/").json()["results"]],
            "file": page.get(f"/photos/{photo.pk}/file").status_code,
            "thumb": page.get(f"/photos/{photo.pk}/thumb").status_code,
            "name on a page": "harbour-secret" in html,
        }

    assert reads() == {"results": [photo.pk], "matches": 1, "examples": [photo.pk], "album": [photo.pk],
                       "file": 200, "thumb": 200, "name on a page": True}
    membership.delete()
    assert reads() == {"results": [], "matches": 0, "examples": [], "album": [], "file": 404, "thumb": 404,
                       "name on a page": False}
    # Her own things stay hers: the search and the album still open, empty of Ann's photo.
    assert api.get(f"/api/searches/{search.pk}/").status_code == 200
    assert page.get(f"/albums/{album.pk}/audit").status_code == 200
    refused = api.post(f"/api/searches/{search.pk}/refine/", {"positive_assets": [photo.pk]}, format="json")
    assert refused.status_code == 400 and refused.json() == {"positive_assets": [f"No such photo: {photo.pk}."]}
