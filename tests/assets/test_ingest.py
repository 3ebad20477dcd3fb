"""ingest_file / ingest_upload on single files: formats, refusals, EXIF, dedupe, the signal."""
from __future__ import annotations

import datetime as dt
import io
import zoneinfo
from pathlib import Path

import pytest
from django.db import transaction
from PIL import Image

from assets import ingest as ingest_module
from assets.ingest import IngestOutcome, ingest_file, ingest_upload
from assets.models import Asset, Library, RejectedFile
from assets.signals import asset_stored

from .conftest import exif_with, image_bytes

pytestmark = pytest.mark.django_db


def stored_files(media_root: Path) -> list[Path]:
    return sorted(p for p in (media_root / "libraries").rglob("*") if p.is_file())


def animated_gif() -> bytes:
    frames = [Image.new("P", (30, 20), color) for color in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "data", "stored_format", "suffix", "size"),
    [
        ("JPEG", lambda: image_bytes("JPEG"), "JPEG", "jpg", (64, 48)),
        ("PNG", lambda: image_bytes("PNG"), "PNG", "png", (64, 48)),
        ("WEBP", lambda: image_bytes("WEBP"), "WEBP", "webp", (64, 48)),
        ("TIFF", lambda: image_bytes("TIFF", compression="tiff_lzw"), "TIFF", "tif", (64, 48)),
        ("GIF", animated_gif, "GIF", "gif", (30, 20)),
        ("HEIC", lambda: image_bytes("HEIF", quality=80), "HEIF", "heic", (64, 48)),
    ],
)
def test_each_accepted_format_is_stored(library, media_root, fmt, data, stored_format, suffix, size):
    outcome = ingest_file(library, io.BytesIO(data()), f"photo.{fmt.lower()}")

    assert outcome.status == "stored" and outcome.reason is None
    asset = Asset.objects.get(pk=outcome.asset_id)
    assert (asset.format, (asset.width, asset.height), asset.status) == (stored_format, size, "pending")
    assert asset.original_name == f"photo.{fmt.lower()}"
    assert asset.file.name == f"libraries/{library.pk}/{asset.sha256[:2]}/{asset.sha256}.{suffix}"
    assert stored_files(media_root) == [media_root / asset.file.name]
    assert list((media_root / "incoming").iterdir()) == []  # no temporary file left behind


def test_outcome_as_dict(library):
    outcome = ingest_file(library, io.BytesIO(b"hello"), "notes.txt")
    assert outcome == IngestOutcome("notes.txt", "rejected", None, "not_an_image", "This file is not an image.")
    assert outcome.as_dict() == {
        "name": "notes.txt", "status": "rejected", "asset_id": None,
        "reason": "not_an_image", "message": "This file is not an image.", "archive": None,
    }


def truncated_jpeg_body() -> bytes:
    data = image_bytes("JPEG", size=(256, 256), seed=3)
    return data[: len(data) * 6 // 10]  # headers intact, scans cut short


def truncated_jpeg_header() -> bytes:
    return image_bytes("JPEG", seed=4)[:40]


def damaged_png() -> bytes:
    data = image_bytes("PNG", size=(128, 128), seed=5)
    return data[:60] + b"\x00" * 200 + data[260:]


@pytest.mark.parametrize(
    ("limits", "data", "reason", "message"),
    [
        ({}, lambda: b"Just some notes, not a photo.\n", "not_an_image", "This file is not an image."),
        ({}, lambda: b"", "not_an_image", "This file is not an image."),
        ({}, lambda: b"%PDF-1.4\n%%EOF\n", "not_an_image", "This file is not an image."),
        ({}, truncated_jpeg_body, "corrupt", "The file is damaged or incomplete and cannot be read."),
        ({}, truncated_jpeg_header, "corrupt", "The file is damaged or incomplete and cannot be read."),
        ({}, damaged_png, "corrupt", "The file is damaged or incomplete and cannot be read."),
        ({"CLETIR_MAX_UPLOAD_BYTES": 1000}, lambda: image_bytes("PNG"), "too_large",
         "The file is larger than the upload limit of 1 KB."),
        ({"CLETIR_MAX_IMAGE_PIXELS": 10_000}, lambda: image_bytes("PNG", size=(200, 100)), "decompression_bomb",
         "The image has more than 0.01 megapixels, the most that is decoded safely."),
        ({}, lambda: image_bytes("BMP"), "unsupported_format",
         "BMP images are not supported; use JPEG, PNG, WebP, TIFF, GIF or HEIC/HEIF."),
        ({}, lambda: image_bytes("ICO", size=(32, 32)), "unsupported_format",
         "ICO images are not supported; use JPEG, PNG, WebP, TIFF, GIF or HEIC/HEIF."),
    ],
    ids=["text", "empty", "pdf", "truncated-jpeg", "jpeg-header-only", "damaged-png", "too-large",
         "decompression-bomb", "bmp", "ico"],
)
def test_bad_files_are_rejected_with_reason(settings, library, owner, media_root, limits, data, reason, message):
    for name, value in limits.items():
        setattr(settings, name, value)

    outcome = ingest_file(library, io.BytesIO(data()), "upload.bin", uploaded_by=owner)

    assert outcome.as_dict() == {"name": "upload.bin", "status": "rejected", "asset_id": None,
                                 "reason": reason, "message": message, "archive": None}
    rejected = RejectedFile.objects.get()
    assert (rejected.library, rejected.uploaded_by, rejected.original_name) == (library, owner, "upload.bin")
    assert (rejected.reason, rejected.message) == (reason, message)
    assert not Asset.objects.exists()
    assert stored_files(media_root) == [] if (media_root / "libraries").exists() else True
    assert list((media_root / "incoming").iterdir()) == []


def test_too_large_upload_is_refused_from_its_declared_size_without_reading(settings, library):
    settings.CLETIR_MAX_UPLOAD_BYTES = 2_500_000

    class Upload(io.BytesIO):
        size = 3_000_000  # as Django's UploadedFile reports it

        def read(self, *args):
            raise AssertionError("must not be read")

    outcome = ingest_file(library, Upload(), "huge.jpg")
    assert (outcome.reason, outcome.message) == ("too_large", "The file is larger than the upload limit of 2.5 MB.")


def test_exif_orientation_swaps_stored_width_and_height(library):
    data = image_bytes("JPEG", size=(60, 40), exif=exif_with(orientation=6))
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(data), "rotated.jpg").asset_id)
    assert (asset.width, asset.height) == (40, 60)


def test_exif_capture_time_with_offset(library):
    exif = exif_with(taken="2021:05:06 07:08:09", offset="+02:00")
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(image_bytes("JPEG", exif=exif)), "a.jpg").asset_id)
    assert asset.taken_at == dt.datetime(2021, 5, 6, 5, 8, 9, tzinfo=dt.timezone.utc)


def test_exif_capture_time_without_offset_is_in_the_site_time_zone(settings, library):
    settings.TIME_ZONE = "Europe/Paris"
    data = image_bytes("JPEG", exif=exif_with(taken="2021:01:15 12:00:00"))
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(data), "a.jpg").asset_id)
    assert asset.taken_at == dt.datetime(2021, 1, 15, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))


def test_exif_capture_time_of_a_heic(library):
    data = image_bytes("HEIF", exif=exif_with(taken="2023:07:01 18:30:00", offset="-04:00"))
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(data), "IMG_0001.HEIC").asset_id)
    assert asset.taken_at == dt.datetime(2023, 7, 1, 22, 30, tzinfo=dt.timezone.utc)


def test_capture_time_falls_back_to_exif_datetime(settings, library):
    settings.TIME_ZONE = "Europe/Paris"
    scanned = image_bytes("JPEG", seed=1, exif=exif_with(changed="2019:03:04 10:11:12"))
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(scanned), "scan.jpg").asset_id)
    assert asset.taken_at == dt.datetime(2019, 3, 4, 10, 11, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))


def test_exif_datetime_is_only_the_last_fallback(library):
    edited = image_bytes("JPEG", seed=2, exif=exif_with(taken="2021:05:06 07:08:09", offset="+00:00",
                                                         changed="2024:01:01 00:00:00"))
    asset = Asset.objects.get(pk=ingest_file(library, io.BytesIO(edited), "edited.jpg").asset_id)
    assert asset.taken_at == dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def test_unset_camera_clock_gives_no_capture_time(library):
    data = image_bytes("JPEG", exif=exif_with(taken="0000:00:00 00:00:00"))
    assert Asset.objects.get(pk=ingest_file(library, io.BytesIO(data), "a.jpg").asset_id).taken_at is None


def test_same_photo_twice_is_stored_once(library, media_root):
    data = image_bytes("JPEG", seed=7)
    first = ingest_file(library, io.BytesIO(data), "a.jpg")
    second = ingest_file(library, io.BytesIO(data), "copy of a.jpg")

    assert first.status == "stored"
    assert second == IngestOutcome("copy of a.jpg", "duplicate", first.asset_id, None,
                                   "This photo is already in the library.")
    assert Asset.objects.count() == 1
    assert len(stored_files(media_root)) == 1


def test_same_photo_in_two_libraries_is_two_assets(library, owner, media_root):
    other = Library.objects.create(owner=owner, name="Family")
    data = image_bytes("PNG", seed=8)
    a = ingest_file(library, io.BytesIO(data), "a.png")
    b = ingest_file(other, io.BytesIO(data), "a.png")
    assert (a.status, b.status) == ("stored", "stored") and a.asset_id != b.asset_id
    assert len(stored_files(media_root)) == 2


def test_concurrent_upload_of_the_same_photo_loses_to_the_unique_constraint(library, monkeypatch):
    data = image_bytes("JPEG", seed=9)
    winner = ingest_file(library, io.BytesIO(data), "a.jpg")
    # The loser checked for a duplicate before the winner committed: it only learns from the
    # unique constraint when it inserts.
    real = ingest_module._existing_asset_id
    calls = []

    def stale_first_answer(lib, sha256):
        calls.append(sha256)
        return None if len(calls) == 1 else real(lib, sha256)

    monkeypatch.setattr(ingest_module, "_existing_asset_id", stale_first_answer)
    loser = ingest_file(library, io.BytesIO(data), "b.jpg")

    assert (loser.status, loser.asset_id) == ("duplicate", winner.asset_id)
    assert len(calls) == 2 and Asset.objects.count() == 1
    assert Path(Asset.objects.get().file.path).exists()  # the shared file is kept


def test_ingest_upload_of_a_single_file(library, owner):
    outcomes = ingest_upload(library, io.BytesIO(image_bytes("WEBP")), "a.webp", uploaded_by=owner)
    assert [o.status for o in outcomes] == ["stored"]
    assert Asset.objects.get().uploaded_by == owner


def test_asset_stored_signal_is_sent_on_commit_only(library, django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, asset_id, **kwargs):
        received.append((sender, asset_id))

    asset_stored.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            outcome = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=10)), "a.jpg")
        assert received == []  # not committed yet
        for callback in callbacks:
            callback()
        assert received == [(Asset, outcome.asset_id)]

        # Rolled back: the photo never existed, nobody is told.
        received.clear()
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(RuntimeError), transaction.atomic():
                ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=11)), "b.jpg")
                raise RuntimeError("request failed")
        assert received == []

        # A duplicate is not announced again.
        with django_capture_on_commit_callbacks(execute=True):
            ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=10)), "a again.jpg")
        assert received == []
    finally:
        asset_stored.disconnect(receiver)


def test_committed_upload_queues_renditions(library, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(400, 300))), "a.jpg")
    asset = Asset.objects.get(pk=outcome.asset_id)
    assert asset.status == "ready"
    assert sorted(asset.renditions.values_list("name", flat=True)) == ["preview", "thumb"]
