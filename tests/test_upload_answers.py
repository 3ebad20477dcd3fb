"""Honest upload answers: every file of a request gets an outcome, also the ones the server could
not finish, and API errors are JSON in every mode."""
from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.test import APIClient

from assets import ingest
from assets.models import Asset, Library, PendingFile
from tests.test_libraries_web import jpeg_bytes

SERVER_ERROR = "The server failed while storing this file and kept nothing of it; send it again."
NOT_ATTEMPTED = "Not stored: the upload stopped at an earlier file because of a server error. Send it again."


@pytest.fixture
def owner(make_user):
    return make_user("ann")


@pytest.fixture
def library(owner):
    return Library.objects.create(name="Harbour", owner=owner)


@pytest.fixture
def client(owner):
    api = APIClient()
    api.force_authenticate(owner)
    return api


def upload_url(library) -> str:
    return f"/api/libraries/{library.pk}/upload/"


def all_files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def outcome(name, status, reason=None, message=None, asset_id=None, archive=None) -> dict:
    return {"name": name, "status": status, "asset_id": asset_id, "reason": reason, "message": message,
            "archive": archive}


@pytest.mark.django_db
def test_a_database_error_mid_request_answers_every_file(client, library, media_root, database_fails_after_one_photo):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("c.jpg", jpeg_bytes(3))
    response = client.post(upload_url(library), {"files": [
        SimpleUploadedFile("a.jpg", jpeg_bytes(1)), SimpleUploadedFile("b.jpg", jpeg_bytes(2)),
        SimpleUploadedFile("more.zip", archive.getvalue()),
    ]}, format="multipart")

    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    stored = Asset.objects.get()
    assert response.json() == {"stored": 1, "duplicates": 0, "rejected": 0, "skipped": 0, "failed": 2, "results": [
        outcome("a.jpg", "stored", asset_id=stored.pk),
        outcome("b.jpg", "failed", "server_error", SERVER_ERROR),
        outcome("more.zip", "failed", "server_error", NOT_ATTEMPTED),
    ]}
    assert all_files(media_root) == {stored.file.name}  # nothing of b.jpg, no spool left
    assert not PendingFile.objects.exists()


@pytest.mark.django_db
def test_a_file_cut_off_by_the_end_of_the_request_is_not_received(client, library, media_root):
    body = encode_multipart(BOUNDARY, {"files": [
        SimpleUploadedFile("a.jpg", jpeg_bytes(1)), SimpleUploadedFile("b.jpg", jpeg_bytes(2)),
    ]})
    cut = body.index(b'filename="b.jpg"') + 2000  # inside b.jpg's bytes: the client went away

    response = client.generic("POST", upload_url(library), body[:cut], content_type=MULTIPART_CONTENT)

    assert response.status_code == 400
    assert response.json() == {"stored": 1, "duplicates": 0, "rejected": 0, "skipped": 0, "failed": 1, "results": [
        outcome("a.jpg", "stored", asset_id=Asset.objects.get().pk),
        outcome("b.jpg", "failed", "not_received",
                "The request ended before this file had fully arrived; it was not stored. Send it again."),
    ]}


@pytest.mark.django_db
def test_large_uploads_spool_into_the_media_roots_temporary_area(client, library, media_root, monkeypatch, tmp_path):
    spools = []
    real_upload = ingest.Ingestion.upload

    def watching(self, fileobj, name):
        spools.append(fileobj.temporary_file_path())
        return real_upload(self, fileobj, name)

    monkeypatch.setattr(ingest.Ingestion, "upload", watching)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.jpg", jpeg_bytes(1))
        zf.writestr("padding.bin", b"\xff" * 3_000_000)  # past Django's 2.5 MB in-memory limit

    response = client.post(upload_url(library), {"files": [SimpleUploadedFile("big.zip", archive.getvalue())]},
                           format="multipart")

    assert response.status_code == 200
    assert [spool.rsplit("/", 1)[0] for spool in spools] == [str(media_root / "incoming")]
    assert spools[0].endswith(".upload.zip")
    assert list((media_root / "incoming").iterdir()) == []  # removed when the request ended


@pytest.mark.django_db(transaction=True)
def test_an_upload_into_a_library_deleted_meanwhile_is_refused_and_leaves_no_file(
    client, library, media_root, monkeypatch
):
    real_inspect = ingest.inspect_image

    def deleted_while_checking(path):
        Library.objects.filter(pk=library.pk).delete()  # another request's delete commits now
        return real_inspect(path)

    monkeypatch.setattr(ingest, "inspect_image", deleted_while_checking)
    response = client.post(upload_url(library), {"files": [
        SimpleUploadedFile("a.jpg", jpeg_bytes(1)), SimpleUploadedFile("b.jpg", jpeg_bytes(2)),
    ]}, format="multipart")

    assert response.status_code == 409
    assert response.json()["results"] == [
        outcome("a.jpg", "failed", "library_deleted", "The library was deleted during the upload; this file was not stored."),
        outcome("b.jpg", "failed", "library_deleted", "Not stored: the library was deleted during the upload."),
    ]
    assert all_files(media_root) == set() and not PendingFile.objects.exists()
    # Once the library is gone, an upload is a plain 404.
    response = client.post(upload_url(library), {"files": [SimpleUploadedFile("c.jpg", jpeg_bytes(3))]},
                           format="multipart")
    assert response.status_code == 404 and response.json() == {"detail": "No Library matches the given query."}


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_api_errors_are_json_in_every_mode(client, library, settings, monkeypatch, debug):
    settings.DEBUG = debug

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("assets.api.check_upload_quota", broken)
    client.raise_request_exception = False
    response = client.post(upload_url(library), {"files": [SimpleUploadedFile("a.jpg", jpeg_bytes(1))]},
                           format="multipart")
    assert (response.status_code, response["Content-Type"]) == (500, "application/json")
    assert response.json() == {"detail": "The server failed to answer this request; it has been logged. Try again later."}

    response = client.get("/api/no-such-endpoint/")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
    response = client.put(upload_url(library))
    assert (response.status_code, response["Content-Type"]) == (405, "application/json")
