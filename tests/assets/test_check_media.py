"""`manage.py check_media`: both sides of "every file has a row, every row has its file", for
every model with a FileField (photos, renditions, and retrieval's proxy images and aggregators,
found through django.apps), and what `--fix` does to each."""
from __future__ import annotations

import io
import os
import time

import pytest
from django.core.management import CommandError, call_command

from assets.ingest import ingest_file
from assets.media_audit import MISSING_FILE_ERROR, audit_media
from assets.models import Asset, Rendition
from assets.renditions import make_renditions
from retrieval.models import EmbeddingSpace, ProxyImage, ProxySet

from .conftest import image_bytes

pytestmark = pytest.mark.django_db
HOUR = 3600


def make_old(path, seconds: float = HOUR + 60) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def site(library, media_root):
    """Three photos with renditions; one photo's original and one thumbnail lost; an embedding
    space whose aggregator file is lost and a proxy image whose file is lost; three orphan
    files (one recent), a stale upload spool, and a folder of the site's own under the media
    root."""
    photos = []
    for seed in range(3):
        outcome = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=seed)), f"p{seed}.jpg")
        make_renditions(outcome.asset_id)
        photos.append(Asset.objects.get(pk=outcome.asset_id))
    lost_photo, lost_thumb_of = photos[0], photos[1]
    (media_root / lost_photo.file.name).unlink()
    lost_thumb = Rendition.objects.get(asset=lost_thumb_of, name="thumb")
    (media_root / lost_thumb.file.name).unlink()
    space = EmbeddingSpace.objects.create(
        name="s", profile="tiny", vlm_model="v", vision_model="d", generator_model="g", vlm_dim=2, vision_dim=2,
        fingerprint="f", aggregator_file="aggregators/gone.safetensors",
    )
    proxies = ProxySet.objects.create(query="dog", space=space, generator_key="g", seeds=[0], seeds_key="0",
                                      prompt="a photo of a dog", features=b"")
    ProxyImage.objects.create(proxy_set=proxies, index=0, seed=0, file=f"proxies/{proxies.pk}/0.webp")
    write(media_root / "libraries" / str(library.pk) / "ab" / "left-by-a-crash.jpg", b"x" * 1500)
    write(media_root / "renditions" / "77" / "cd" / "old-thumb.webp", b"y" * 500)
    write(media_root / "proxies" / "999" / "3.webp", b"z" * 200)
    for path in (media_root / "libraries").rglob("left-by-a-crash.jpg"):
        make_old(path)
    make_old(media_root / "renditions" / "77" / "cd" / "old-thumb.webp")  # the proxy orphan stays recent
    write(media_root / "incoming" / "tmp1234.upload.zip", b"s" * 3000)
    make_old(media_root / "incoming" / "tmp1234.upload.zip")
    write(media_root / "labelled" / "dogs" / "rex.jpg", b"mine")  # not ours: never touched
    return {"library": library, "lost_photo": lost_photo, "lost_thumb": lost_thumb, "space": space,
            "proxies": proxies}


def test_audit_reports_both_sides_across_apps(site, media_root):
    audit = audit_media()

    assert [(f.name, f.size) for f in audit.orphans] == [
        (f"libraries/{site['library'].pk}/ab/left-by-a-crash.jpg", 1500),
        ("proxies/999/3.webp", 200),
        ("renditions/77/cd/old-thumb.webp", 500),
    ]
    assert sorted((m.model, m.pk, m.field, m.name) for m in audit.missing) == sorted([
        ("assets.Asset", site["lost_photo"].pk, "file", site["lost_photo"].file.name),
        ("assets.Rendition", site["lost_thumb"].pk, "file", site["lost_thumb"].file.name),
        ("retrieval.EmbeddingSpace", site["space"].pk, "aggregator_file", "aggregators/gone.safetensors"),
        ("retrieval.ProxyImage", ProxyImage.objects.get().pk, "file", f"proxies/{site['proxies'].pk}/0.webp"),
    ])
    assert [(f.name, f.size) for f in audit.temporary] == [("incoming/tmp1234.upload.zip", 3000)]
    assert audit.unmanaged == {"labelled": 1}
    assert audit.named_files == 3 * 3 - 2  # three photos with two renditions each, less the two lost


def test_command_lists_counts_sizes_and_paths_and_fails_when_not_clean(site, media_root):
    out = io.StringIO()
    with pytest.raises(CommandError, match="3 orphan files, 4 rows whose file is missing"):
        call_command("check_media", stdout=out)
    report = out.getvalue()
    assert "Orphan files (no row names them): 3 (2.2 KB), 2 older than the grace period" in report
    assert f"  libraries/{site['library'].pk}/ab/left-by-a-crash.jpg  1.5 KB  1 h old" in report
    assert "Rows whose file is missing: 4" in report
    assert f"  assets.Asset {site['lost_photo'].pk} (file): {site['lost_photo'].file.name}" in report
    assert "Temporary files in incoming/: 1 (3 KB), 1 older than the grace period" in report
    assert "Not checked (no row ever names files there): labelled/ (1 files)" in report


def test_fix_removes_old_orphans_only_and_marks_rows_without_files(site, media_root, django_capture_on_commit_callbacks):
    out = io.StringIO()
    # Still not clean afterwards: the recent orphan, and the two rows whose file stays missing.
    with pytest.raises(CommandError, match="1 orphan files, 2 rows whose file is missing"):
        with django_capture_on_commit_callbacks(execute=True):
            call_command("check_media", "--fix", stdout=out)

    # Old orphans and the stale spool are gone; the recent orphan may be an upload in flight.
    assert not (media_root / "renditions" / "77").exists()
    assert not list((media_root / "libraries").rglob("left-by-a-crash.jpg"))
    assert (media_root / "proxies" / "999" / "3.webp").exists()
    assert list((media_root / "incoming").iterdir()) == []
    assert (media_root / "labelled" / "dogs" / "rex.jpg").read_bytes() == b"mine"
    # The photo without its file is failed, with the reason; the other photos are untouched.
    lost = Asset.objects.get(pk=site["lost_photo"].pk)
    assert (lost.status, lost.error) == ("failed", MISSING_FILE_ERROR)
    assert set(Asset.objects.exclude(pk=lost.pk).values_list("status", "error")) == {("ready", "")}
    # The thumbnail row is gone, and made again from the original (tasks run eagerly here).
    thumb = Rendition.objects.get(asset_id=site["lost_thumb"].asset_id, name="thumb")
    assert thumb.pk != site["lost_thumb"].pk and (media_root / thumb.file.name).exists()
    # The aggregator is cleared (search falls back to the mean); the proxy image row is left.
    site["space"].refresh_from_db()
    assert site["space"].aggregator_file.name == ""
    assert ProxyImage.objects.count() == 1
    report = out.getvalue()
    assert ("Fixed: removed 2 orphan files (2 KB), kept 1 younger than the grace period or claimed meanwhile; "
            "removed 1 temporary files (3 KB) and 0 files left by interrupted uploads or deletes; marked 1 photos "
            "failed; deleted 1 renditions (queued again); cleared 1 file fields.") in report
    assert f"  left as it is: retrieval.ProxyImage {ProxyImage.objects.get().pk} (file)" in report
    assert "After the fix: 1 orphan files, 2 rows without files." in report


def test_a_clean_media_root_passes(library, media_root):
    outcome = ingest_file(library, io.BytesIO(image_bytes("PNG", seed=9)), "a.png")
    make_renditions(outcome.asset_id)
    out = io.StringIO()
    call_command("check_media", stdout=out)
    assert "3 files" in out.getvalue() and "Orphan files (no row names them): 0" in out.getvalue()
