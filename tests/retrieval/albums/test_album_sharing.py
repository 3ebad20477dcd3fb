"""Albums shared read-only with the members of their libraries: who sees what, who may change it."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from assets.models import Library, LibraryMembership
from retrieval.albums.albums import album_photos, create_album_from_search
from retrieval.models import Album, AlbumPhoto
from tests.retrieval.albums.test_albums import (  # noqa: F401 (fixtures)
    TEXT,
    category,
    plant_photos,
    vectors_scoring,
)
from tests.retrieval.search.test_search_core import new_search, text_vector, tiny  # noqa: F401

NO_FILTERS = {"taken_from": None, "taken_to": None, "camera_make": "", "camera_model": "", "keywords": [], "formats": []}

pytestmark = pytest.mark.django_db

NOT_OWNER = {"detail": "Only the album's owner may change it; it is shared with you read-only."}


@pytest.fixture
def shared_setup(tiny, ann, library, category, make_user):
    """Ann's album over her library and a second one of hers where Cleo is a member too; Cleo
    is a member of the second only, Dan of none."""
    cleo, dan = make_user("cleo"), make_user("dan")
    second = Library.objects.create(name="Quay", owner=ann)
    LibraryMembership.objects.create(library=second, user=cleo, role=LibraryMembership.Role.VIEWER)
    rng = np.random.default_rng(9)
    boats = plant_photos(tiny, second, vectors_scoring(tiny, category["t"], np.full(5, 0.5), rng), start=5000)
    search = category["search"]
    album = create_album_from_search(ann, search, "Boats")  # scope: every library ann sees, both
    in_second = {p.asset_id for p in AlbumPhoto.objects.filter(album=album, asset__library=second)}
    assert in_second == {b.pk for b in boats}
    return {"album": album, "cleo": cleo, "dan": dan, "second": second, "boats": boats}


def test_the_owner_shares_and_a_member_reads_only_the_photos_of_libraries_they_see(ann, shared_setup, client):
    album, cleo, dan = shared_setup["album"], shared_setup["cleo"], shared_setup["dan"]
    boats = sorted(b.pk for b in shared_setup["boats"])
    client.force_login(cleo)
    assert client.get(f"/api/albums/{album.pk}/").status_code == 404  # not shared yet
    assert client.get("/api/albums/").json() == []

    client.force_login(ann)
    changed = client.patch(f"/api/albums/{album.pk}/", {"shared": True}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["shared"] is True
    assert client.patch(f"/api/albums/{album.pk}/", {"shared": "maybe"}, content_type="application/json").json() == {
        "shared": ["Must be a valid boolean."]}

    client.force_login(cleo)
    listed = client.get("/api/albums/").json()
    assert [(a["id"], a["owner"], a["shared"]) for a in listed] == [(album.pk, "ann", True)]
    body = client.get(f"/api/albums/{album.pk}/").json()
    assert body == {**listed[0]} and body["name"] == "Boats"
    photos = client.get(f"/api/albums/{album.pk}/photos/?sort=uploaded&size=200").json()
    assert photos["count"] == 5 and [p["asset_id"] for p in photos["results"]] == boats
    export = client.get(f"/api/albums/{album.pk}/export/csv/")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert sorted(int(r["asset_id"]) for r in rows) == boats
    page = client.get("/albums/").content.decode()
    assert "shared by ann" in page
    detail = client.get(f"/albums/{album.pk}/")
    html = detail.content.decode()
    assert detail.context["total"] == 5 and "shared by ann (read-only)" in html
    assert 'id="delete-album"' not in html and 'id="share-album"' not in html and "Pin" not in html
    assert client.get(f"/albums/{album.pk}/audit").status_code == 200

    # Every change is the owner's: 403 with the reason, nothing changed.
    target = boats[0]
    for method, url, data in [
        ("patch", f"/api/albums/{album.pk}/", {"name": "Mine now"}),
        ("patch", f"/api/albums/{album.pk}/", {"shared": False}),
        ("delete", f"/api/albums/{album.pk}/", None),
        ("post", f"/api/albums/{album.pk}/pin/", {"asset": target}),
        ("post", f"/api/albums/{album.pk}/remove/", {"asset": target}),
        ("post", f"/api/albums/{album.pk}/automatic/", {"asset": target}),
    ]:
        answer = getattr(client, method)(url, data, content_type="application/json")
        assert (answer.status_code, answer.json()) == (403, NOT_OWNER), (method, url)
    for url, data in [(f"/albums/{album.pk}/delete", {}), (f"/albums/{album.pk}/share", {"shared": "0"}),
                      (f"/albums/{album.pk}/photos/{target}/state", {"state": "removed"})]:
        assert client.post(url, data).status_code == 403, url
    album.refresh_from_db()
    assert (album.name, album.shared) == ("Boats", True)
    assert AlbumPhoto.objects.get(album=album, asset_id=target).state == "auto"

    # A user in none of its libraries does not see it at all.
    client.force_login(dan)
    assert client.get("/api/albums/").json() == []
    for url in (f"/api/albums/{album.pk}/", f"/api/albums/{album.pk}/photos/", f"/api/albums/{album.pk}/export/csv/",
                f"/albums/{album.pk}/", f"/albums/{album.pk}/audit", f"/albums/{album.pk}/export.csv"):
        assert client.get(url).status_code == 404, url
    assert client.patch(f"/api/albums/{album.pk}/", {"name": "x"}, content_type="application/json").json() == {
        "detail": "No Album matches the given query."}
    assert client.post(f"/api/albums/{album.pk}/pin/", {"asset": target}).status_code == 404


def test_unsharing_or_leaving_the_library_hides_the_album_at_once(ann, shared_setup, client):
    album, cleo = shared_setup["album"], shared_setup["cleo"]
    client.force_login(ann)
    assert client.post(f"/albums/{album.pk}/share", {"shared": "1"}).status_code == 302
    client.force_login(cleo)
    assert client.get(f"/albums/{album.pk}/").status_code == 200

    client.force_login(ann)
    client.post(f"/albums/{album.pk}/share", {"shared": "0"})
    assert not Album.objects.get(pk=album.pk).shared
    client.force_login(cleo)
    assert client.get(f"/albums/{album.pk}/").status_code == 404 and client.get("/api/albums/").json() == []

    Album.objects.filter(pk=album.pk).update(shared=True)
    assert client.get(f"/api/albums/{album.pk}/").status_code == 200
    LibraryMembership.objects.filter(user=cleo).delete()
    assert client.get(f"/api/albums/{album.pk}/").status_code == 404 and client.get("/api/albums/").json() == []
    assert album_photos(album, cleo).count() == 0


def test_the_owner_renames_and_shares_through_the_api_with_exact_payloads(ann, shared_setup, client):
    album = shared_setup["album"]
    client.force_login(ann)
    answer = client.patch(f"/api/albums/{album.pk}/", {"name": " Sailing boats ", "shared": True},
                          content_type="application/json")
    album.refresh_from_db()
    assert answer.status_code == 200 and answer.json() == {
        "id": album.pk, "url": f"http://testserver/api/albums/{album.pk}/",
        "photos_url": f"http://testserver/api/albums/{album.pk}/photos/", "name": "Sailing boats", "owner": "ann",
        "shared": True, "libraries": [], "space": album.space.name, "cutoff": album.cutoff,
        "source_search": album.source_search_id, "disabled_proxies": [], "filters": NO_FILTERS, "derivation": "current",
        "derivation_error": "", "created_at": album.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert client.patch(f"/api/albums/{album.pk}/", {"name": "  "}, content_type="application/json").json() == {
        "name": ["This field may not be blank."]}
    assert client.put(f"/api/albums/{album.pk}/", {"name": "x"}, content_type="application/json").status_code == 405
    page = client.get(f"/albums/{album.pk}/").content.decode()
    assert "Stop sharing" in page and 'id="delete-album"' in page
