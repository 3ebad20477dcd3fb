"""Fixtures of the ingestion tests: a temporary MEDIA_ROOT, a library, images made on the spot."""
from __future__ import annotations

import io
import random

import pillow_heif
import pytest
from PIL import Image

from assets.models import Library

pillow_heif.register_heif_opener()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.FILE_UPLOAD_TEMP_DIR = str(root / "incoming")
    return root


@pytest.fixture(autouse=True)
def eager_celery():
    """Tasks queued on commit run in this process instead of going to a broker."""
    from cletir_site.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def owner(make_user):
    return make_user("ann")


@pytest.fixture
def library(owner):
    return Library.objects.create(owner=owner, name="Trips")


def image_bytes(fmt: str, size=(64, 48), seed: int = 0, exif: Image.Exif | None = None, **save) -> bytes:
    """A small photo-like image (noise, so every seed gives different bytes) encoded as `fmt`."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    if exif is not None:
        save["exif"] = exif.tobytes()
    im.save(out, format=fmt, **save)
    return out.getvalue()


def exif_with(orientation: int | None = None, taken: str | None = None, offset: str | None = None,
              changed: str | None = None) -> Image.Exif:
    """EXIF with an orientation, a DateTimeOriginal (`taken`, + OffsetTimeOriginal) and the IFD0
    DateTime (`changed`, 0x0132)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if changed is not None:
        exif[0x0132] = changed
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset
    return exif
