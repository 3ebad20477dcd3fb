"""Pixels of renditions: a stored photo decoded once, upright, in 8-bit sRGB, encoded per rendition.

Two engines make the same files (names, formats, sizes: the longest side bounded by the
rendition's `max_side`, never upscaled; EXIF orientation applied; transparency kept in WebP and
PNG, laid on white in JPEG):

* **libvips** (PyPI `pyvips` with the `pyvips-binary` wheel, no system package), the default:
  `thumbnail` shrinks on load (a 12-megapixel JPEG is decoded at 1/2 scale by libjpeg for a
  1600 px preview) and resamples with Lanczos, outside the GIL, so a batch's photos can be
  rendered in parallel threads. 16-bit, greyscale and CMYK photos are brought to 8-bit sRGB by
  libvips' own colourspace conversion (CMYK through its built-in CMYK profile when the file
  has none); embedded RGB profiles are dropped, as the Pillow path does.
* **Pillow**, the fallback per photo: formats this libvips build cannot decode (HEIC: the wheel
  has libheif without an HEVC decoder; checked once per process), sample formats it would not
  convert faithfully (32-bit integer and float TIFFs), and any photo libvips refuses to decode.
  A damaged photo therefore fails with Pillow's error, the reason recorded before libvips.

`CLETIR_RENDITION_ENGINE=pillow` makes every rendition through Pillow (bench/ingest.py compares
the two). Nothing here touches the database or the media folder: `render` returns bytes.
"""
from __future__ import annotations

import functools
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from PIL import Image, ImageOps

from .imaging import to_rgb8  # importing imaging also registers the HEIF opener with Pillow

if TYPE_CHECKING:
    import pyvips

logger = logging.getLogger(__name__)

SUFFIXES = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}
# One quality per format for both engines (Pillow's `quality` and libvips' `Q` mean the same
# thing; WebP `method` is libvips' `effort`).
JPEG_QUALITY = 85
WEBP_QUALITY = 80
WEBP_EFFORT = 4
# libvips converts these sample formats and colour spaces to 8-bit sRGB faithfully; anything
# else (32-bit integer or float samples, Lab, multiband scientific TIFFs) goes to Pillow.
_LIBVIPS_SAMPLE_FORMATS = {"uchar", "ushort"}
_LIBVIPS_INTERPRETATIONS = {"srgb", "rgb16", "b-w", "grey16", "cmyk"}


@dataclass(frozen=True)
class RenditionSpec:
    name: str
    max_side: int
    format: str  # JPEG, WEBP or PNG

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]


@dataclass(frozen=True)
class EncodedRendition:
    name: str
    suffix: str
    width: int
    height: int
    data: bytes


def spec_from_settings(name: str, entry: dict) -> RenditionSpec:
    """settings.CLETIR_RENDITIONS entry -> spec; an unknown format is a configuration error."""
    file_format = entry["format"].upper()
    if file_format not in SUFFIXES:
        raise ValueError(f"CLETIR_RENDITIONS[{name!r}]: format {entry['format']!r} is not one of {sorted(SUFFIXES)}")
    return RenditionSpec(name=name, max_side=int(entry["max_side"]), format=file_format)


def render(path: str | Path, stored_format: str, specs: list[RenditionSpec]) -> list[EncodedRendition]:
    """Encode the renditions `specs` of the photo at `path` (stored_format: Asset.format).

    Raises whatever decoding raises (a damaged or missing file): the caller records it.
    """
    if not specs:
        return []
    if settings.CLETIR_RENDITION_ENGINE == "libvips" and libvips_decodes(stored_format):
        vips = _pyvips()
        try:
            rendered = render_with_libvips(path, specs)
        except (vips.Error, _NotForLibvips) as exc:
            # Pillow decides: it either reads the photo as the upload validation did, or fails
            # with the same error the renditions always reported.
            logger.info("libvips did not render %s (%s); using Pillow", path, str(exc).strip()[:200])
        else:
            return rendered
    return render_with_pillow(path, specs)


# --- libvips --------------------------------------------------------------------------------


class _NotForLibvips(Exception):
    """A photo whose samples libvips would not convert to 8-bit sRGB faithfully: the Pillow path
    converts it (its mode conversion is the one for every mode Pillow opens)."""


@functools.cache
def _pyvips():
    """pyvips, imported on first use in the process that renders.

    Not at import time: a Celery prefork worker imports the tasks in its parent process, and
    libvips' thread pool must be started in the child that uses it, never inherited by a fork.
    """
    import pyvips

    # The operation cache keeps recent images in memory for reuse; a worker renders each photo
    # once, so it only costs memory (and would make benchmarks measure the cache).
    pyvips.cache_set_max(0)
    return pyvips


@functools.cache
def libvips_available() -> bool:
    try:
        _pyvips()
    except Exception:  # ImportError, or a pyvips without its binary (OSError from cffi)
        logger.warning("libvips is not available; renditions are made with Pillow", exc_info=True)
        return False
    return True


@functools.cache
def libvips_decodes(stored_format: str) -> bool:
    """Whether this process's libvips decodes photos of a stored format (Asset.format)."""
    if not libvips_available():
        return False
    if stored_format != "HEIF":
        return True  # JPEG, PNG, WebP, TIFF and GIF loaders are in every libvips build
    # The pyvips-binary wheel reads HEIF headers but may lack the HEVC decoder (patents): decode
    # one small HEIC to find out, once, instead of failing on every iPhone photo.
    probe = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 40)).save(probe, format="HEIF")
    vips = _pyvips()
    vips_log = logging.getLogger("pyvips")  # where pyvips forwards libvips' warnings
    level = vips_log.level
    vips_log.setLevel(logging.CRITICAL)  # the failed probe's per-tile warnings say nothing new
    try:
        vips.Image.new_from_buffer(probe.getvalue(), "").avg()
    except vips.Error:
        logger.info("this libvips cannot decode HEIC (no HEVC decoder); HEIC renditions are made with Pillow")
        return False
    finally:
        vips_log.setLevel(level)
    return True


def render_with_libvips(path: str | Path, specs: list[RenditionSpec]) -> list[EncodedRendition]:
    vips = _pyvips()
    header = vips.Image.new_from_file(str(path))  # reads the header only
    if header.format not in _LIBVIPS_SAMPLE_FORMATS or header.interpretation not in _LIBVIPS_INTERPRETATIONS:
        raise _NotForLibvips(f"{header.format} samples in {header.interpretation}")
    largest = max(spec.max_side for spec in specs)
    # Shrink-on-load to the largest rendition, upright (thumbnail applies EXIF orientation);
    # `fail_on="error"` refuses a damaged file instead of rendering libjpeg's grey fill.
    image = vips.Image.thumbnail(str(path), largest, height=largest, size="down", fail_on="error")
    image = to_srgb8(image).copy_memory()  # decoded once; every rendition reads it from memory
    encoded = []
    for spec in specs:
        scaled = image
        if max(image.width, image.height) > spec.max_side:
            scaled = image.thumbnail_image(spec.max_side, height=spec.max_side, size="down")
        encoded.append(EncodedRendition(spec.name, spec.suffix, scaled.width, scaled.height, _vips_encode(scaled, spec.format)))
    return encoded


def to_srgb8(image: "pyvips.Image") -> "pyvips.Image":
    """A libvips image in 8-bit sRGB (+ alpha): greyscale to three bands, 16-bit scaled to 8
    bits, CMYK converted; libvips' own colourspace conversion."""
    if image.format == "ushort" and image.interpretation not in ("rgb16", "grey16", "cmyk"):
        # 16-bit samples labelled as 8-bit colour: label them 16-bit, so that the conversion
        # scales them (converting them as they are clips every level above 255 to white).
        image = image.copy(interpretation="rgb16" if image.bands >= 3 else "grey16")
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")  # rgb16/grey16 -> 8-bit: samples are scaled, not clipped
    return image if image.format == "uchar" else image.cast("uchar")


def _vips_encode(image, file_format: str) -> bytes:
    if file_format == "JPEG":
        if image.hasalpha():
            # JPEG has no alpha: lay transparent areas on white, as a page would show them.
            image = image.flatten(background=[255, 255, 255])
        return image.jpegsave_buffer(Q=JPEG_QUALITY, keep="none")
    if file_format == "WEBP":
        return image.webpsave_buffer(Q=WEBP_QUALITY, effort=WEBP_EFFORT, keep="none")
    return image.pngsave_buffer(keep="none")


# --- Pillow ---------------------------------------------------------------------------------


def render_with_pillow(path: str | Path, specs: list[RenditionSpec]) -> list[EncodedRendition]:
    """Decode once at the smallest size that still serves the largest rendition (JPEG draft
    mode decodes at 1/2, 1/4 or 1/8 scale for free); each smaller rendition is resized from the
    previous one."""
    with Image.open(path) as source:
        largest = max(spec.max_side for spec in specs)
        width, height = source.size
        scale = min(1.0, largest / max(width, height))
        if source.format in ("JPEG", "MPO"):
            # Orientation only swaps axes, so a box of the largest side fits either way round.
            source.draft(source.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        # 8-bit RGB with the tones kept (16-bit greys, float TIFFs), RGBA where there is alpha.
        image = to_rgb8(ImageOps.exif_transpose(source), keep_alpha=True)
    encoded = {}
    for spec in sorted(specs, key=lambda s: -s.max_side):
        if max(image.size) > spec.max_side:  # in place: each smaller rendition starts from the last one
            image.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        data = _pillow_encode(image, spec.format)
        encoded[spec.name] = EncodedRendition(spec.name, spec.suffix, image.width, image.height, data)
    return [encoded[spec.name] for spec in specs]


def _pillow_encode(image: Image.Image, file_format: str) -> bytes:
    if file_format == "JPEG":
        image = to_rgb8(image)  # JPEG has no alpha: transparent areas on white, as a page shows them
    out = io.BytesIO()
    if file_format == "JPEG":
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    elif file_format == "WEBP":
        image.save(out, format="WEBP", quality=WEBP_QUALITY, method=WEBP_EFFORT)
    else:
        image.save(out, format="PNG")
    return out.getvalue()
