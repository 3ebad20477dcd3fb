"""Renditions (thumbnail, preview) of a stored photo, made once.

Idempotent by state: the renditions a photo already has (one row per (asset, name), unique) are
not made again, so a retried or duplicated task does no work twice. Files are written to a
name derived from the photo's hash and the rendition name and placed together with their row
(assets.media.place_files): the row is inserted before the file moves, so of two workers racing
on one photo the loser's insert fails and its file is dropped, and a photo deleted meanwhile
fails the commit on its foreign key: the file placed for it is removed again.

The source is decoded once per task, at the smallest size that still serves the largest missing
rendition (JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale for free), EXIF orientation is
applied, and each smaller rendition is resized from the previous one.
"""
from __future__ import annotations

import logging
import math
import os

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, InterfaceError, OperationalError
from PIL import Image, ImageOps

from .imaging import to_rgb8  # importing imaging also registers the HEIF opener with Pillow
from .media import new_incoming_file, place_files, remove_quietly
from .models import Asset, Rendition, rendition_upload_path

logger = logging.getLogger(__name__)

# Worth a retry: the database went away for a moment. Everything else (a damaged file, a
# missing file, a decoder error) fails the same way the next time and marks the photo failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
ERROR_PREFIX = "Renditions failed: "
_SAVE_OPTIONS = {
    "JPEG": {"quality": 85},
    "WEBP": {"quality": 80, "method": 4},
}
_SUFFIXES = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}


class PhotoDeleted(Exception):
    """The photo went away while its renditions were being made."""


def rendition_specs() -> dict[str, dict]:
    """name -> {"max_side": int, "format": "JPEG" | "WEBP" | "PNG"} (settings.CLETIR_RENDITIONS)."""
    return settings.CLETIR_RENDITIONS


def make_renditions(asset_id: int) -> list[str]:
    """Make the photo's missing renditions; return the names made (empty when none were due).

    A photo whose renditions cannot be made is marked failed with the error, and the function
    returns normally; only TRANSIENT_ERRORS propagate (for the task to retry).
    """
    asset = Asset.objects.filter(pk=asset_id).first()
    if asset is None:  # deleted since it was queued
        return []
    existing = set(asset.renditions.values_list("name", flat=True))
    missing = {name: spec for name, spec in rendition_specs().items() if name not in existing}
    made: list[str] = []
    if missing:
        try:
            made = _render(asset, missing)
        except TRANSIENT_ERRORS:
            raise
        except PhotoDeleted:
            return []
        except Exception as exc:
            logger.warning("renditions of asset %s failed", asset_id, exc_info=True)
            error = f"{ERROR_PREFIX}{exc or type(exc).__name__}"
            Asset.objects.filter(pk=asset_id).update(status=Asset.Status.FAILED, error=error)
            return []
    # Ready once every rendition exists; a photo that failed here before is ready again.
    Asset.objects.filter(pk=asset_id, status=Asset.Status.PENDING).update(status=Asset.Status.READY)
    Asset.objects.filter(pk=asset_id, status=Asset.Status.FAILED, error__startswith=ERROR_PREFIX).update(
        status=Asset.Status.READY, error=""
    )
    return made


def _render(asset: Asset, specs: dict[str, dict]) -> list[str]:
    made = []
    with Image.open(default_storage.path(asset.file.name)) as source:
        largest = max(spec["max_side"] for spec in specs.values())
        width, height = source.size
        scale = min(1.0, largest / max(width, height))
        if source.format in ("JPEG", "MPO"):
            # Orientation only swaps axes, so a box of the largest side fits either way round.
            source.draft(source.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        # RGB, or RGBA when the photo has transparency (PNG, GIF, WebP, HEIF with alpha).
        image = to_rgb8(ImageOps.exif_transpose(source), keep_alpha=True)
    for name, spec in sorted(specs.items(), key=lambda item: -item[1]["max_side"]):
        side = spec["max_side"]
        if max(image.size) > side:  # in place: each smaller rendition starts from the last one
            image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        _store(asset, name, spec["format"].upper(), image)
        made.append(name)
    return made


def _store(asset: Asset, name: str, file_format: str, image: Image.Image) -> None:
    if file_format == "JPEG":
        image = to_rgb8(image)  # JPEG has no alpha: transparent areas on white, as a page shows them
    rendition = Rendition(asset=asset, name=name, width=image.width, height=image.height)
    rendition.file.name = rendition_upload_path(rendition, f"r.{_SUFFIXES[file_format]}")
    fd, temp = new_incoming_file()
    try:
        with os.fdopen(fd, "wb") as out:
            image.save(out, format=file_format, **_SAVE_OPTIONS.get(file_format, {}))
    except BaseException:
        remove_quietly(temp)
        raise
    try:
        place_files([(temp, rendition.file.name)], rendition.save)
    except IntegrityError:
        # Made by another worker meanwhile (its row and file stay), or the photo was deleted
        # (nothing to keep): either way this file was not placed.
        if not Asset.objects.filter(pk=asset.pk).exists():
            raise PhotoDeleted(asset.pk) from None
        if not Rendition.objects.filter(asset=asset, name=name).exists():
            raise
