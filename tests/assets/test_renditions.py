"""Thumbnails: made once on the `default` queue, EXIF orientation applied, failures recorded."""
from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from assets.ingest import ingest_file
from assets.models import Asset, Rendition
from assets.tasks import make_renditions

from .conftest import exif_with, image_bytes

pytestmark = pytest.mark.django_db


def rendition_files(media_root):
    return sorted(p for p in (media_root / "renditions").rglob("*") if p.is_file())


def test_renditions_are_made_once(library, media_root):
    # 2000x1000 stored sideways (orientation 6): displayed 1000 wide, 2000 high.
    data = image_bytes("JPEG", size=(2000, 1000), exif=exif_with(orientation=6))
    asset_id = ingest_file(library, io.BytesIO(data), "tall.jpg").asset_id

    assert make_renditions.apply(args=[asset_id]).get() == ["preview", "thumb"]
    first = {r.name: (r.file.name, r.width, r.height) for r in Rendition.objects.filter(asset_id=asset_id)}
    files = rendition_files(media_root)
    mtimes = [os.stat(p).st_mtime_ns for p in files]

    # A retry (or a duplicate message) finds the work done and does none of it again.
    assert make_renditions.apply(args=[asset_id]).get() == []
    assert {r.name: (r.file.name, r.width, r.height) for r in Rendition.objects.filter(asset_id=asset_id)} == first
    assert rendition_files(media_root) == files and [os.stat(p).st_mtime_ns for p in files] == mtimes

    asset = Asset.objects.get(pk=asset_id)
    sha = asset.sha256
    assert first == {
        "preview": (f"renditions/{library.pk}/{sha[:2]}/{sha}-preview.jpg", 800, 1600),
        "thumb": (f"renditions/{library.pk}/{sha[:2]}/{sha}-thumb.webp", 160, 320),
    }
    assert asset.status == "ready" and asset.error == ""
    with Image.open(media_root / first["thumb"][0]) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (160, 320))
    with Image.open(media_root / first["preview"][0]) as preview:
        assert (preview.format, preview.size) == ("JPEG", (800, 1600))


def test_small_transparent_photo_is_not_upscaled(library):
    im = Image.new("RGBA", (100, 50), (255, 0, 0, 128))
    out = io.BytesIO()
    im.save(out, format="PNG")
    asset_id = ingest_file(library, io.BytesIO(out.getvalue()), "dot.png").asset_id
    make_renditions.apply(args=[asset_id]).get()
    sizes = {r.name: (r.width, r.height) for r in Rendition.objects.filter(asset_id=asset_id)}
    assert sizes == {"preview": (100, 50), "thumb": (100, 50)}
    thumb = Rendition.objects.get(asset_id=asset_id, name="thumb")
    with Image.open(thumb.file.path) as image:
        assert image.mode == "RGBA"  # WebP keeps the transparency


def test_heic_renditions(library):
    asset_id = ingest_file(library, io.BytesIO(image_bytes("HEIF", size=(640, 480))), "IMG.HEIC").asset_id
    make_renditions.apply(args=[asset_id]).get()
    assert Rendition.objects.get(asset_id=asset_id, name="thumb").width == 320


def test_failure_marks_the_photo_failed_without_raising(library, media_root):
    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG")), "gone.jpg").asset_id
    os.remove(Asset.objects.get(pk=asset_id).file.path)

    assert make_renditions.apply(args=[asset_id]).get() == []
    asset = Asset.objects.get(pk=asset_id)
    assert asset.status == "failed" and asset.error.startswith("Renditions failed: ")
    assert "No such file" in asset.error
    assert not Rendition.objects.filter(asset_id=asset_id).exists()


def test_deleted_photo_is_a_no_op(library):
    assert make_renditions.apply(args=[987654]).get() == []


def test_task_is_discovered_and_routed_to_the_default_queue():
    from celery.loaders.base import find_related_module

    from cletir_site.celery import app

    # What app.autodiscover_tasks() does for each installed app.
    assert find_related_module("assets", "tasks").__name__ == "assets.tasks"
    assert "assets.tasks.make_renditions" in app.tasks
    route = app.amqp.router.route({}, "assets.tasks.make_renditions", args=(1,), kwargs={})
    assert route["queue"].name == "default"
