"""Zip uploads: entries stored one by one, unsafe paths refused, nothing written outside MEDIA_ROOT."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from assets.archives import is_skipped_name, is_unsafe_name
from assets.ingest import ingest_upload
from assets.models import Asset, RejectedFile

from .conftest import image_bytes

pytestmark = pytest.mark.django_db

UNSAFE = ("The entry's path is absolute or leaves the archive's folder; it was not extracted.")


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in entries.items():
            # ZipInfo keeps the name exactly as given (ZipFile.write would clean it up).
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    out.seek(0)
    return out


def all_files(root: Path) -> set[Path]:
    return {Path(folder) / name for folder, _, names in os.walk(root) for name in names}


def test_zip_entries_are_stored_with_their_nested_names(library, media_root):
    upload = make_zip({
        "trip/": b"",
        "trip/day1/beach.jpg": image_bytes("JPEG", seed=1),
        "trip/day2/boat.png": image_bytes("PNG", seed=2),
        "trip/again.jpg": image_bytes("JPEG", seed=1),
        "trip/notes.txt": b"sunny",
        "__MACOSX/trip/._beach.jpg": b"\x00\x05\x16\x07",
        "trip/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "trip/Thumbs.db": b"\xd0\xcf\x11\xe0",
    })

    outcomes = ingest_upload(library, upload, "trip.zip")

    assert [(o.name, o.status, o.reason, o.archive) for o in outcomes] == [
        ("trip/day1/beach.jpg", "stored", None, "trip.zip"),
        ("trip/day2/boat.png", "stored", None, "trip.zip"),
        ("trip/again.jpg", "duplicate", None, "trip.zip"),
        ("trip/notes.txt", "rejected", "not_an_image", "trip.zip"),
        ("__MACOSX/trip/._beach.jpg", "skipped", "not_a_photo", "trip.zip"),
        ("trip/.DS_Store", "skipped", "not_a_photo", "trip.zip"),
        ("trip/Thumbs.db", "skipped", "not_a_photo", "trip.zip"),
    ]
    assert outcomes[4].message == (
        "Desktop metadata or a hidden file (__MACOSX/, .DS_Store, Thumbs.db), not a photo: skipped."
    )
    assert outcomes[2].asset_id == outcomes[0].asset_id
    assert sorted(Asset.objects.values_list("original_name", flat=True)) == ["trip/day1/beach.jpg", "trip/day2/boat.png"]
    # A refusal from inside an archive names the archive on the library page.
    assert list(RejectedFile.objects.values_list("original_name", "reason")) == [
        ("trip.zip: trip/notes.txt", "not_an_image")
    ]


def test_zip_is_recognised_by_content_whatever_its_name(library):
    outcomes = ingest_upload(library, make_zip({"a.jpg": image_bytes("JPEG")}), "photos.upload")
    assert [(o.name, o.status) for o in outcomes] == [("a.jpg", "stored")]


def test_path_traversal_entries_are_refused_and_nothing_is_written_outside_media_root(
    library, media_root, tmp_path, monkeypatch
):
    workdir = tmp_path / "cwd" / "deeper"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)  # a relative `../evil.jpg` written by name would land in tmp_path/cwd
    names = ["../evil.jpg", "/abs.jpg", "ok/../../evil2.jpg", "C:/drive.jpg", "C:evil3.jpg",
             "..\\..\\evil4.jpg", "sub\\..\\..\\evil5.jpg", "../.hidden.jpg"]
    entries = {name: image_bytes("JPEG", seed=i) for i, name in enumerate(names)}
    entries["good.jpg"] = image_bytes("JPEG", seed=99)

    outcomes = ingest_upload(library, make_zip(entries), "evil.zip")

    assert [(o.name, o.status, o.reason, o.message) for o in outcomes] == (
        [(name, "rejected", "unsafe_path", UNSAFE) for name in names] + [("good.jpg", "stored", None, None)]
    )
    assert RejectedFile.objects.filter(reason="unsafe_path").count() == len(names)
    # Only the good photo exists, content-addressed under MEDIA_ROOT; nothing else anywhere.
    good = Asset.objects.get()
    assert all_files(tmp_path) == {media_root / good.file.name}
    assert not Path("/abs.jpg").exists() and not Path("/evil.jpg").exists()


def test_unsafe_name_rules():
    for name in ["../a.jpg", "/a.jpg", "a/../../b.jpg", "C:/a.jpg", "c:a.jpg", "a\\b.jpg", "a\x00.jpg", ""]:
        assert is_unsafe_name(name), name
    for name in ["a.jpg", "trip/a.jpg", "trip/..a.jpg", "a..b.jpg", "2020/x/./y.jpg"]:
        assert not is_unsafe_name(name), name
    assert is_skipped_name("__MACOSX/a.jpg") and is_skipped_name("a/.DS_Store") and not is_skipped_name("a/b.jpg")


def test_highly_compressed_entry_is_refused_as_zip_bomb(library):
    upload = make_zip({"bomb.tif": b"\x00" * 5_000_000, "fine.jpg": image_bytes("JPEG")})
    outcomes = ingest_upload(library, upload, "x.zip")
    assert [(o.name, o.status, o.reason, o.message) for o in outcomes] == [
        ("bomb.tif", "rejected", "zip_bomb",
         "The entry is compressed more than 100 times, like a zip bomb; it was not extracted."),
        ("fine.jpg", "stored", None, None),
    ]


def zipbomb() -> io.BytesIO:
    """The hostile walk's zipbomb.zip: ~300 KB holding one 300 MB entry of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("dir/x.jpg", "w", force_zip64=True) as entry:
            for _ in range(300):
                entry.write(b"\0" * 1_000_000)
    out.seek(0)
    return out


def test_zipbomb_over_the_upload_limit_is_called_a_zip_bomb(library):
    upload = zipbomb()
    assert len(upload.getvalue()) < 400_000

    outcomes = ingest_upload(library, upload, "zipbomb.zip")

    assert [o.as_dict() for o in outcomes] == [{
        "name": "dir/x.jpg", "status": "rejected", "asset_id": None, "reason": "zip_bomb", "archive": "zipbomb.zip",
        "message": "The entry is compressed more than 100 times, like a zip bomb; it was not extracted.",
    }]
    assert list(RejectedFile.objects.values_list("original_name", "reason")) == [("zipbomb.zip: dir/x.jpg", "zip_bomb")]


def test_archive_that_expands_past_the_limit_like_a_bomb_is_a_zip_bomb(settings, library):
    settings.CLETIR_MAX_ARCHIVE_BYTES = 2_000_000
    upload = make_zip({f"{i}.tif": b"\0" * 1_000_000 for i in range(3)})
    outcomes = ingest_upload(library, upload, "bombs.zip")
    assert [(o.name, o.reason) for o in outcomes] == [("bombs.zip", "zip_bomb")]
    assert outcomes[0].message.startswith("The archive expands to 3 MB from ")
    assert outcomes[0].message.endswith(", more than 100 times, like a zip bomb; nothing was extracted.")


def test_archive_over_the_size_limit_is_refused_whole(settings, library):
    settings.CLETIR_MAX_ARCHIVE_BYTES = 5000
    upload = make_zip({"a.jpg": image_bytes("JPEG", seed=1), "b.png": image_bytes("PNG", seed=2)})
    outcomes = ingest_upload(library, upload, "big.zip")
    assert [o.as_dict() for o in outcomes] == [{
        "name": "big.zip", "status": "rejected", "asset_id": None, "reason": "archive_too_large",
        "message": f"The archive expands to {_kb(upload)}, more than the limit of 5 KB.", "archive": None,
    }]
    assert not Asset.objects.exists()
    assert RejectedFile.objects.get().original_name == "big.zip"


def _kb(upload: io.BytesIO) -> str:
    with zipfile.ZipFile(upload) as zf:
        total = sum(i.file_size for i in zf.infolist())
    upload.seek(0)
    return f"{total / 1000:.1f}".removesuffix(".0") + " KB"


def test_archive_with_too_many_entries_is_refused_whole(settings, library):
    settings.CLETIR_MAX_ARCHIVE_ENTRIES = 2
    upload = make_zip({f"{i}.jpg": image_bytes("JPEG", size=(8, 8), seed=i) for i in range(3)})
    outcomes = ingest_upload(library, upload, "many.zip")
    assert [(o.reason, o.message) for o in outcomes] == [
        ("archive_too_large", "The archive has 3 entries, more than the limit of 2.")
    ]


def test_entry_over_the_file_limit_is_refused_without_reading(settings, library):
    settings.CLETIR_MAX_UPLOAD_BYTES = 1000
    outcomes = ingest_upload(library, make_zip({"big.png": image_bytes("PNG")}), "x.zip")
    assert [(o.name, o.reason, o.message) for o in outcomes] == [
        ("big.png", "too_large", "The file is larger than the upload limit of 1 KB.")
    ]


def test_damaged_archive_and_damaged_entry(library):
    outcomes = ingest_upload(library, io.BytesIO(b"PK\x03\x04 this is not really a zip"), "broken.zip")
    assert [(o.name, o.reason, o.message) for o in outcomes] == [
        ("broken.zip", "corrupt", "The file is damaged or incomplete and cannot be read.")
    ]
    # A stored (uncompressed) entry with one flipped byte fails its CRC check while being read.
    photo = image_bytes("PNG", seed=4)
    data = bytearray(make_zip({"a.png": photo}, zipfile.ZIP_STORED).getvalue())
    at = data.index(photo) + len(photo) // 2
    data[at] ^= 0xFF
    outcomes = ingest_upload(library, io.BytesIO(bytes(data)), "crc.zip")
    assert [(o.name, o.reason) for o in outcomes] == [("a.png", "corrupt")]
    assert not Asset.objects.exists()


def test_encrypted_entry_is_refused(library):
    data = bytearray(make_zip({"a.jpg": image_bytes("JPEG")}).getvalue())
    # Set the "encrypted" flag bit in the local header and in the central directory.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x01
    outcomes = ingest_upload(library, io.BytesIO(bytes(data)), "secret.zip")
    assert [(o.name, o.reason, o.message) for o in outcomes] == [
        ("a.jpg", "unsupported_format", "Encrypted archive entries are not supported.")
    ]


def test_non_seekable_zip_stream_is_spooled_under_media_root(library, media_root):
    class Stream(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, size=-1):
            return self._data.read(size)

    upload = Stream(make_zip({"a.jpg": image_bytes("JPEG")}).getvalue())
    outcomes = ingest_upload(library, upload, "stream.zip")
    assert [o.status for o in outcomes] == ["stored"]
    assert list((media_root / "incoming").iterdir()) == []


def test_archive_with_nothing_to_import_still_gets_an_answer(library):
    upload = make_zip({"folder/": b"", "__MACOSX/._a.jpg": b"x", ".DS_Store": b"x"})
    outcomes = ingest_upload(library, upload, "empty.zip")
    assert [o.as_dict() for o in outcomes] == [{
        "name": "empty.zip", "status": "rejected", "asset_id": None, "reason": "empty_archive",
        "message": "The archive contains no files to import.", "archive": None,
    }] + [{
        "name": name, "status": "skipped", "asset_id": None, "reason": "not_a_photo", "archive": "empty.zip",
        "message": "Desktop metadata or a hidden file (__MACOSX/, .DS_Store, Thumbs.db), not a photo: skipped.",
    } for name in ("__MACOSX/._a.jpg", ".DS_Store")]
