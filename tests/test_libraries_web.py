"""Libraries through the browser pages and the REST API: uploads, roles, galleries, files."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from assets.models import Asset, Library, LibraryMembership, RejectedFile
from assets.renditions import make_renditions

pytestmark = pytest.mark.django_db


def jpeg_bytes(seed: int, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def people(make_user, media_root):
    ann, vic, eve, bob = make_user("ann"), make_user("vic"), make_user("eve"), make_user("bob")
    library = Library.objects.create(name="Harbour", owner=ann)
    LibraryMembership.objects.create(library=library, user=vic, role=LibraryMembership.Role.VIEWER)
    LibraryMembership.objects.create(library=library, user=eve, role=LibraryMembership.Role.EDITOR)
    return {"ann": ann, "vic": vic, "eve": eve, "bob": bob, "library": library}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client, library, *files):
    return client.post(f"/api/libraries/{library.pk}/upload/", {"files": list(files)}, format="multipart")


def test_api_upload_reports_every_file_exactly(people):
    library = people["library"]
    photo = jpeg_bytes(1)
    response = upload(
        api(people["eve"]), library,
        SimpleUploadedFile("boat.jpg", photo, "image/jpeg"),
        SimpleUploadedFile("boat-again.jpg", photo, "image/jpeg"),
        SimpleUploadedFile("notes.txt", b"just some text", "text/plain"),
    )
    assert response.status_code == 200
    asset = Asset.objects.get(library=library)
    assert response.json() == {
        "stored": 1, "duplicates": 1, "rejected": 1, "skipped": 0, "failed": 0,
        "results": [
            {"name": "boat.jpg", "status": "stored", "asset_id": asset.pk, "reason": None, "message": None,
             "archive": None},
            {"name": "boat-again.jpg", "status": "duplicate", "asset_id": asset.pk, "reason": None,
             "message": "This photo is already in the library.", "archive": None},
            {"name": "notes.txt", "status": "rejected", "asset_id": None, "reason": "not_an_image",
             "message": RejectedFile.objects.get(library=library).message, "archive": None},
        ],
    }
    assert asset.uploaded_by == people["eve"] and asset.original_name == "boat.jpg"


def test_upload_without_files_is_a_clear_400(people):
    response = api(people["ann"]).post(f"/api/libraries/{people['library'].pk}/upload/", {}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"files": ["No files: send one or more files in the 'files' field."]}


def test_a_viewer_cannot_upload_and_a_stranger_cannot_see(people):
    library = people["library"]
    viewer = upload(api(people["vic"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(2), "image/jpeg"))
    assert viewer.status_code == 403
    stranger = upload(api(people["bob"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(2), "image/jpeg"))
    assert stranger.status_code == 404
    assert not Asset.objects.exists()
    assert api(people["bob"]).get("/api/libraries/").json() == []
    assert api(people["bob"]).get(f"/api/libraries/{library.pk}/progress/").status_code == 404
    assert api(people["bob"]).get("/api/assets/").json()["count"] == 0


def test_only_the_owner_renames_and_deletes_and_delete_removes_files(people, media_root, django_capture_on_commit_callbacks):
    library = people["library"]
    upload(api(people["ann"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(3), "image/jpeg"))
    asset = Asset.objects.get()
    make_renditions(asset.pk)
    files = [media_root / asset.file.name] + [media_root / r.file.name for r in asset.renditions.all()]
    assert all(f.exists() for f in files) and len(files) == 3

    assert api(people["eve"]).patch(f"/api/libraries/{library.pk}/", {"name": "Mine"}, format="json").status_code == 403
    assert api(people["eve"]).delete(f"/api/libraries/{library.pk}/").status_code == 403
    renamed = api(people["ann"]).patch(f"/api/libraries/{library.pk}/", {"name": "Old harbour"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Old harbour"

    from django.test import Client

    browser = Client()
    browser.force_login(people["ann"])
    assert browser.get(f"/libraries/{library.pk}/delete").status_code == 200  # the confirmation page
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(f"/libraries/{library.pk}/delete")
    assert response.status_code == 302
    assert not Library.objects.filter(pk=library.pk).exists() and not Asset.objects.exists()
    assert not any(f.exists() for f in files)


def test_library_create_and_list_pages(people, client):
    client.force_login(people["bob"])
    response = client.post("/libraries/new", {"name": "Bob's boats"})
    library = Library.objects.get(owner=people["bob"])
    assert response.status_code == 302 and response["Location"] == f"/libraries/{library.pk}/"
    duplicate = client.post("/libraries/new", {"name": "Bob's boats"})
    assert duplicate.status_code == 400 and b"You already have a library with this name." in duplicate.content
    listing = client.get("/").content.decode()
    assert "Bob&#x27;s boats" in listing and "Harbour" not in listing


def test_gallery_pages_newest_first_and_by_capture_time(people, client):
    library = people["library"]
    from datetime import datetime, timezone

    assets = []
    for i in range(5):
        assets.append(Asset.objects.create(library=library, sha256=f"{i:064x}", file=f"x/{i}.jpg", original_name=f"p{i}.jpg",
                                           taken_at=datetime(2020, 1, 5 - i, tzinfo=timezone.utc) if i != 2 else None))
    client.force_login(people["vic"])

    def names(**params):
        html = client.get(f"/libraries/{library.pk}/", params).content.decode()
        return re.findall(r'title="(p\d\.jpg)"', html)

    assert names(size=24) == ["p4.jpg", "p3.jpg", "p2.jpg", "p1.jpg", "p0.jpg"]
    assert names(sort="taken", size=24) == ["p0.jpg", "p1.jpg", "p3.jpg", "p4.jpg", "p2.jpg"]
    page = client.get(f"/libraries/{library.pk}/", {"size": 24})
    assert b"Drop photos" not in page.content  # a viewer gets no upload box


def test_photo_files_are_served_only_to_those_who_see_the_library(people, client):
    library = people["library"]
    upload(api(people["ann"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(4), "image/jpeg"))
    asset = Asset.objects.get()
    make_renditions(asset.pk)
    client.force_login(people["vic"])
    original = client.get(f"/photos/{asset.pk}/file")
    assert original.status_code == 200 and original["Content-Type"] == "image/jpeg"
    assert b"".join(original.streaming_content) == jpeg_bytes(4)
    assert client.get(f"/photos/{asset.pk}/thumb").status_code == 200
    assert client.get(f"/libraries/{library.pk}/photos/{asset.pk}/").status_code == 200
    client.force_login(people["bob"])
    for url in (f"/photos/{asset.pk}/file", f"/photos/{asset.pk}/thumb", f"/libraries/{library.pk}/photos/{asset.pk}/",
                f"/libraries/{library.pk}/"):
        assert client.get(url).status_code == 404, url


def test_asset_api_payload(people):
    library = people["library"]
    upload(api(people["ann"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(5), "image/jpeg"))
    asset = Asset.objects.get()
    body = api(people["vic"]).get(f"/api/assets/?library={library.pk}").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["id"] == asset.pk and row["library"] == library.pk and row["original_name"] == "a.jpg"
    assert (row["width"], row["height"], row["format"]) == (64, 48, "JPEG")
    assert row["file_url"] == f"http://testserver/photos/{asset.pk}/file"
    assert row["thumbnail_url"] is None  # not made yet
    make_renditions(asset.pk)
    row = api(people["vic"]).get(f"/api/assets/{asset.pk}/").json()
    assert row["thumbnail_url"] == f"http://testserver/photos/{asset.pk}/thumb"


def test_members_are_managed_by_the_owner(people, client):
    library = people["library"]
    client.force_login(people["ann"])
    client.post(f"/libraries/{library.pk}/members", {"username": "bob", "role": "editor"})
    assert LibraryMembership.objects.get(library=library, user=people["bob"]).role == "editor"
    client.force_login(people["eve"])
    assert client.post(f"/libraries/{library.pk}/members", {"username": "vic", "role": "editor"}).status_code == 403
    members = api(people["vic"]).get(f"/api/libraries/{library.pk}/members/").json()
    assert members == [{"username": "bob", "role": "editor"}, {"username": "eve", "role": "editor"},
                       {"username": "vic", "role": "viewer"}]


def test_a_rendition_not_made_yet_is_a_placeholder_never_a_broken_image(people, client):
    library = people["library"]
    upload(api(people["ann"]), library, SimpleUploadedFile("a.jpg", jpeg_bytes(6), "image/jpeg"))
    asset = Asset.objects.get()
    client.force_login(people["vic"])

    for variant in ("thumb", "preview"):
        response = client.get(f"/photos/{asset.pk}/{variant}")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/svg+xml"
        assert response["Cache-Control"] == "no-store"  # asked again next time: the real one then
        assert response["X-Rendition-Status"] == "pending"
        assert b"<svg" in response.content and "processing…" in response.content.decode()
    assert client.get(f"/photos/{asset.pk}/poster").status_code == 404  # no such rendition at all

    Asset.objects.filter(pk=asset.pk).update(status=Asset.Status.FAILED, error="Renditions failed: x")
    failed = client.get(f"/photos/{asset.pk}/thumb")
    assert (failed.status_code, failed["X-Rendition-Status"]) == (200, "failed")
    assert "no preview" in failed.content.decode()

    Asset.objects.filter(pk=asset.pk).update(status=Asset.Status.PENDING, error="")
    make_renditions(asset.pk)
    made = client.get(f"/photos/{asset.pk}/thumb")
    assert made["Content-Type"] == "image/webp" and made["Cache-Control"].startswith("private, max-age=")

    client.force_login(people["bob"])  # the placeholder is no way around the permission check
    assert client.get(f"/photos/{asset.pk}/preview").status_code == 404


def test_pages_show_pending_photos_without_broken_images(people, client):
    library = people["library"]
    upload(api(people["ann"]), library,
           SimpleUploadedFile("a.jpg", jpeg_bytes(7), "image/jpeg"), SimpleUploadedFile("b.jpg", jpeg_bytes(8), "image/jpeg"))
    first, second = Asset.objects.order_by("pk")
    make_renditions(first.pk)
    Asset.objects.filter(pk=second.pk).update(format="HEIF")  # as if it were an iPhone photo
    client.force_login(people["vic"])

    gallery = client.get(f"/libraries/{library.pk}/").content.decode()
    # The waiting tile says so and is refreshed by the page; the made one is an image.
    assert f'data-pending-tile="{second.pk}"' in gallery and f'data-pending-tile="{first.pk}"' not in gallery
    assert f'src="/photos/{first.pk}/thumb"' in gallery and f'src="/photos/{second.pk}/thumb"' not in gallery
    assert 'data-photos-url="/api/assets/"' in gallery

    # A photo page shows the preview, or its placeholder for a format browsers cannot show.
    assert 'src="/photos/%d/preview"' % first.pk in client.get(f"/libraries/{library.pk}/photos/{first.pk}/").content.decode()
    assert 'src="/photos/%d/preview"' % second.pk in client.get(f"/libraries/{library.pk}/photos/{second.pk}/").content.decode()
    Asset.objects.filter(pk=second.pk).update(format="JPEG")
    assert f'src="/photos/{second.pk}/file"' in client.get(f"/libraries/{library.pk}/photos/{second.pk}/").content.decode()


def test_the_asset_api_returns_the_photos_asked_for_by_id(people):
    library = people["library"]
    upload(api(people["ann"]), library, *(SimpleUploadedFile(f"{i}.jpg", jpeg_bytes(10 + i), "image/jpeg") for i in range(3)))
    ids = list(Asset.objects.order_by("pk").values_list("pk", flat=True))
    make_renditions(ids[0])
    bobs = Library.objects.create(name="Bob's", owner=people["bob"])
    hidden = Asset.objects.create(library=bobs, sha256="f" * 64, file="x/f.jpg")

    body = api(people["vic"]).get("/api/assets/", {"ids": f"{ids[0]},{ids[2]},{hidden.pk},999999"}).json()
    assert [(row["id"], row["status"], row["thumbnail_url"]) for row in body["results"]] == [
        (ids[2], "pending", None), (ids[0], "ready", f"http://testserver/photos/{ids[0]}/thumb"),
    ]
    for bad in ("", "1,x", "-1", "1;2", "9" * 19, ",".join(["1"] * 201)):
        response = api(people["vic"]).get("/api/assets/", {"ids": bad})
        assert response.status_code == 400, bad
        assert list(response.json()) == ["ids"]
