"""Export of a search's matches and of an album: CSV with exact content, ZIP of the originals,
streamed, from the pages and the API, with the viewer's access now."""
from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

import pytest
from PIL import Image
from rest_framework.test import APIClient

from assets.metadata import read_metadata
from assets.models import Library, LibraryMembership
from retrieval.models import Album, AlbumPhoto, Search
from tests.assets.conftest import image_bytes
from tests.photos import write_photos
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db

HEADER = "asset_id,library_id,library,original_name,sha256,taken_at,score,text_score,image_score,keywords,zip_name\r\n"


@pytest.fixture
def world(make_user, media_root):
    """Ann's search over her library and Bob's (she is a viewer there): five ranked photos, the
    first four of them matches; and her album of three of them, one removed by hand."""
    ann, bob = make_user("ann"), make_user("bob")
    harbour = Library.objects.create(name="Harbour", owner=ann)
    boats = Library.objects.create(name="=Bob's boats", owner=bob)  # a name a spreadsheet would run
    LibraryMembership.objects.create(library=boats, user=ann, role=LibraryMembership.Role.VIEWER)
    mine = write_photos(media_root, harbour, 3)
    bobs = write_photos(media_root, boats, 2, start=10)
    described = [
        (mine[0], "2019/summer/Sailboat, Brest.JPG", ["sailing", "brest"], datetime(2019, 7, 1, 9, 30, tzinfo=dt_timezone.utc)),
        (mine[1], "../../etc/passwd.jpg", [], None),
        (mine[2], "=HYPERLINK(evil).jpg", ["-minus"], None),
        (bobs[0], "C:\\Users\\bob\\Pictures\\Régate.jpg", ["regatta"], datetime(2020, 5, 6, 7, 8, 9, tzinfo=dt_timezone.utc)),
        (bobs[1], "not a match.jpg", [], None),
    ]
    for photo, name, keywords, taken in described:
        photo.original_name, photo.keywords, photo.taken_at = name, keywords, taken
        photo.save()
    ranked = [mine[0], bobs[0], mine[1], mine[2], bobs[1]]
    search = Search.objects.create(user=ann, text="sailboat", k=4, status=Search.Status.DONE, progress=100,
                                   result_count=5, match_count=4, match_cutoff=0.5)
    store_ranked(search, [(photo, 1 - rank / 8, 0.25, 0.75 - rank / 8) for rank, photo in enumerate(ranked, start=1)])
    album = Album.objects.create(user=ann, name="Boats & sails!", query_vector=b"", cutoff=0.5)
    AlbumPhoto.objects.bulk_create([
        AlbumPhoto(album=album, asset=mine[0], score=0.9), AlbumPhoto(album=album, asset=bobs[0], score=0.8),
        AlbumPhoto(album=album, asset=mine[1], score=0.2, state=AlbumPhoto.State.PINNED),
        AlbumPhoto(album=album, asset=mine[2], score=0.7, state=AlbumPhoto.State.REMOVED),
    ])
    return {"ann": ann, "bob": bob, "boats": boats, "mine": mine, "bobs": bobs, "search": search, "album": album}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def body(response) -> bytes:
    assert response.status_code == 200
    assert response.streaming and not response.has_header("Content-Length")  # streamed as it is made
    return b"".join(response.streaming_content)


def search_csv(world) -> str:
    m, b = world["mine"], world["bobs"]
    return HEADER + (
        f"{m[0].pk},{m[0].library_id},Harbour,\"2019/summer/Sailboat, Brest.JPG\",{m[0].sha256},"
        f"2019-07-01T09:30:00+00:00,0.875000,0.250000,0.625000,sailing; brest,{m[0].pk}-Sailboat_Brest.jpg\r\n"
        f"{b[0].pk},{b[0].library_id},'=Bob's boats,C:\\Users\\bob\\Pictures\\Régate.jpg,{b[0].sha256},"
        f"2020-05-06T07:08:09+00:00,0.750000,0.250000,0.500000,regatta,{b[0].pk}-Régate.jpg\r\n"
        f"{m[1].pk},{m[1].library_id},Harbour,../../etc/passwd.jpg,{m[1].sha256},,0.625000,0.250000,0.375000,,"
        f"{m[1].pk}-passwd.jpg\r\n"
        f"{m[2].pk},{m[2].library_id},Harbour,'=HYPERLINK(evil).jpg,{m[2].sha256},,0.500000,0.250000,0.250000,"
        f"'-minus,{m[2].pk}-HYPERLINKevil.jpg\r\n"
    )


def test_the_matches_export_as_csv_from_the_page_and_the_api_alike(world, client):
    client.force_login(world["ann"])
    search = world["search"]

    page = client.get(f"/search/{search.pk}/export.csv")
    assert page["Content-Type"] == "text/csv; charset=utf-8"
    assert page["Content-Disposition"] == f'attachment; filename="search-{search.pk}-matches.csv"'
    assert body(page).decode() == search_csv(world)  # the matches only (rank 5 is not one), by rank
    assert body(api(world["ann"]).get(f"/api/searches/{search.pk}/export/csv/")).decode() == search_csv(world)


def test_the_matches_export_as_a_zip_of_the_stored_originals(world):
    m, b = world["mine"], world["bobs"]
    response = api(world["ann"]).get(f"/api/searches/{world['search'].pk}/export/zip/", HTTP_ACCEPT="text/csv")
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(body(response)))

    assert archive.testzip() is None
    assert archive.namelist() == [f"{m[0].pk}-Sailboat_Brest.jpg", f"{b[0].pk}-Régate.jpg", f"{m[1].pk}-passwd.jpg",
                                  f"{m[2].pk}-HYPERLINKevil.jpg"]
    for info, photo in zip(archive.infolist(), [m[0], b[0], m[1], m[2]]):
        assert info.compress_type == zipfile.ZIP_STORED  # photos do not compress
        assert archive.read(info) == Path(photo.file.path).read_bytes()


def test_the_album_exports_its_photos_but_not_those_removed_by_hand(world, client):
    m, b, album = world["mine"], world["bobs"], world["album"]
    client.force_login(world["ann"])

    page = client.get(f"/albums/{album.pk}/export.csv")
    assert page["Content-Disposition"] == f'attachment; filename="album-{album.pk}-boats-sails.csv"'
    # By capture time (photos without one last, then by upload); the album's scores; no text/image parts.
    assert body(page).decode() == HEADER + (
        f"{m[0].pk},{m[0].library_id},Harbour,\"2019/summer/Sailboat, Brest.JPG\",{m[0].sha256},"
        f"2019-07-01T09:30:00+00:00,0.900000,,,sailing; brest,{m[0].pk}-Sailboat_Brest.jpg\r\n"
        f"{b[0].pk},{b[0].library_id},'=Bob's boats,C:\\Users\\bob\\Pictures\\Régate.jpg,{b[0].sha256},"
        f"2020-05-06T07:08:09+00:00,0.800000,,,regatta,{b[0].pk}-Régate.jpg\r\n"
        f"{m[1].pk},{m[1].library_id},Harbour,../../etc/passwd.jpg,{m[1].sha256},,0.200000,,,,{m[1].pk}-passwd.jpg\r\n"
    )
    zipped = zipfile.ZipFile(io.BytesIO(body(api(world["ann"]).get(f"/api/albums/{album.pk}/export/zip/"))))
    assert zipped.namelist() == [f"{m[0].pk}-Sailboat_Brest.jpg", f"{b[0].pk}-Régate.jpg", f"{m[1].pk}-passwd.jpg"]


def test_a_member_removed_from_a_library_exports_none_of_its_photos(world):
    LibraryMembership.objects.filter(library=world["boats"], user=world["ann"]).delete()
    m = world["mine"]
    ann = api(world["ann"])
    search, album = f"/api/searches/{world['search'].pk}/export", f"/api/albums/{world['album'].pk}/export"

    for url, photos in ((search, [m[0], m[1], m[2]]), (album, [m[0], m[1]])):
        rows = body(ann.get(f"{url}/csv/")).decode().splitlines()[1:]
        assert [int(row.split(",")[0]) for row in rows] == [photo.pk for photo in photos], url
        assert "Bob" not in "".join(rows) and "Régate" not in "".join(rows)
        names = zipfile.ZipFile(io.BytesIO(body(ann.get(f"{url}/zip/")))).namelist()
        assert [int(name.split("-")[0]) for name in names] == [photo.pk for photo in photos], url


def test_another_users_search_or_album_does_not_exist_for_you(world, client):
    search, album = world["search"], world["album"]
    bob = api(world["bob"])
    client.force_login(world["bob"])
    for kind in ("csv", "zip"):
        for url in (f"/api/searches/{search.pk}/export/{kind}/", f"/api/albums/{album.pk}/export/{kind}/"):
            response = bob.get(url)
            assert (response.status_code, response.json()) == (404, {"detail": "No Search matches the given query."}
                                                                 if "searches" in url else
                                                                 {"detail": "No Album matches the given query."})
            assert APIClient().get(url).status_code == 401
        for url in (f"/search/{search.pk}/export.{kind}", f"/albums/{album.pk}/export.{kind}"):
            assert client.get(url).status_code == 404
    assert api(world["ann"]).get(f"/api/searches/{search.pk}/export/pdf/").status_code == 404


def test_a_photo_deleted_during_the_export_is_named_in_a_last_member(world):
    m = world["mine"]
    Path(m[1].file.path).unlink()  # as a delete that committed after the export read its rows
    zipped = zipfile.ZipFile(io.BytesIO(body(api(world["ann"]).get(f"/api/searches/{world['search'].pk}/export/zip/"))))
    assert zipped.namelist()[-1] == "MISSING.txt" and f"{m[1].pk}-passwd.jpg" not in zipped.namelist()
    assert zipped.read("MISSING.txt").decode() == (
        "Photos left out: their files could not be read (deleted during the export?)\n"
        f"{m[1].pk}-passwd.jpg: No such file or directory\n")


def test_the_pages_link_to_the_exports(world, client):
    client.force_login(world["ann"])
    search, album = world["search"], world["album"]
    page = client.get(f"/search/{search.pk}/").content.decode()
    assert f'href="/search/{search.pk}/export.csv"' in page and f'href="/search/{search.pk}/export.zip"' in page
    page = client.get(f"/albums/{album.pk}/").content.decode()
    assert f'href="/albums/{album.pk}/export.csv"' in page and f'href="/albums/{album.pk}/export.zip"' in page


def test_an_album_zip_may_carry_xmp_sidecars_with_the_album_as_a_keyword(world, client):
    m, b, album = world["mine"], world["bobs"], world["album"]
    m[0].title, m[0].caption, m[0].creator = "Harbour & boats", "Two lines\nof caption", "Ann <ann@example.org>"
    m[0].save()
    zipped = zipfile.ZipFile(io.BytesIO(body(api(world["ann"]).get(f"/api/albums/{album.pk}/export/zip/",
                                                                  {"sidecars": "true"}))))
    assert zipped.namelist() == [f"{m[0].pk}-Sailboat_Brest.jpg", f"{m[0].pk}-Sailboat_Brest.xmp",
                                 f"{b[0].pk}-Régate.jpg", f"{b[0].pk}-Régate.xmp",
                                 f"{m[1].pk}-passwd.jpg", f"{m[1].pk}-passwd.xmp"]
    # What a photo manager reads from the sidecar is what it says (read back by cletir's own reader).
    sidecar = zipped.read(f"{m[0].pk}-Sailboat_Brest.xmp")
    photo = Image.open(io.BytesIO(image_bytes("JPEG", xmp=sidecar)))
    found = read_metadata(photo)
    assert (found.title, found.caption, found.creator, found.keywords, found.errors) == (
        "Harbour & boats", "Two lines\nof caption", "Ann <ann@example.org>",
        ["sailing", "brest", "boats & sails!"], [])
    assert read_metadata(Image.open(io.BytesIO(image_bytes("JPEG", xmp=zipped.read(f"{m[1].pk}-passwd.xmp"))))
                         ).keywords == ["boats & sails!"]

    client.force_login(world["ann"])
    page = zipfile.ZipFile(io.BytesIO(body(client.get(f"/albums/{album.pk}/export.zip", {"sidecars": "1"}))))
    assert page.namelist() == zipped.namelist()
    assert len(zipfile.ZipFile(io.BytesIO(body(client.get(f"/albums/{album.pk}/export.zip")))).namelist()) == 3
    refused = api(world["ann"]).get(f"/api/albums/{album.pk}/export/zip/", {"sidecars": "maybe"})
    assert (refused.status_code, refused.json()) == (400, {"sidecars": ["Must be a valid boolean."]})
