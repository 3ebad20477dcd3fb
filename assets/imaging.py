"""Open and validate one image file: what it is, how big, when it was taken, what its embedded
metadata says (assets.metadata), or why it is refused; and `to_rgb8`, the one way a decoded
photo becomes 8-bit RGB (renditions and indexing both use it).

Accepted: JPEG (and MPO, the multi-picture JPEG that many cameras write), PNG, WebP, TIFF, GIF
(first frame) and HEIC/HEIF (pillow-heif). Every other format Pillow can identify (BMP, ICO,
PSD, PPM, TGA, JPEG 2000, AVIF, ...) is refused as `unsupported_format`: these are not what
cameras and phones produce, browsers show few of them, and each accepted decoder is attack
surface we test. The order of checks keeps the cheap ones first: the header is read lazily, the
pixel count is checked before anything is decoded, and JPEGs are decoded at 1/8 scale (draft
mode) to prove the whole entropy-coded stream is readable without paying for full size.
"""
from __future__ import annotations

import datetime as dt
import warnings
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
from django.conf import settings
from PIL import ExifTags, Image, UnidentifiedImageError

from .metadata import EmbeddedMetadata, read_metadata

pillow_heif.register_heif_opener()

# Pillow format name -> the name we store and the file suffix of the stored original.
ACCEPTED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("JPEG", "jpg"),
    "MPO": ("JPEG", "jpg"),
    "PNG": ("PNG", "png"),
    "WEBP": ("WEBP", "webp"),
    "TIFF": ("TIFF", "tif"),
    "GIF": ("GIF", "gif"),
    "HEIF": ("HEIF", "heic"),
}
ACCEPTED_DESCRIPTION = "JPEG, PNG, WebP, TIFF, GIF or HEIC/HEIF"

# Orientations 5-8 turn the picture by 90 degrees: stored width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

# Leading bytes of the accepted formats: a file that starts like one of them but cannot be read
# is `corrupt`, not `not_an_image` (a truncated JPEG may fail before Pillow identifies it).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def _looks_like_accepted_image(head: bytes) -> bool:
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)
    )


class FileRejected(Exception):
    """A file refused with a stable reason code (RejectedFile.Reason) and a message for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def human_bytes(n: int) -> str:
    """Decimal units, as people read file sizes: 200000000 -> '200 MB', 1500 -> '1.5 KB'."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


def not_an_image() -> FileRejected:
    return FileRejected("not_an_image", "This file is not an image.")


def corrupt() -> FileRejected:
    return FileRejected("corrupt", "The file is damaged or incomplete and cannot be read.")


def too_large(limit_bytes: int) -> FileRejected:
    return FileRejected("too_large", f"The file is larger than the upload limit of {human_bytes(limit_bytes)}.")


def decompression_bomb(limit_pixels: int) -> FileRejected:
    megapixels = f"{limit_pixels / 1_000_000:g}"
    return FileRejected(
        "decompression_bomb",
        f"The image has more than {megapixels} megapixels, the most that is decoded safely.",
    )


def unsupported_format(pillow_format: str) -> FileRejected:
    return FileRejected(
        "unsupported_format", f"{pillow_format} images are not supported; use {ACCEPTED_DESCRIPTION}."
    )


@dataclass(frozen=True)
class ImageInfo:
    format: str  # JPEG, PNG, WEBP, TIFF, GIF or HEIF
    suffix: str  # of the stored file: jpg, png, webp, tif, gif, heic
    width: int  # as displayed, EXIF orientation applied
    height: int
    taken_at: dt.datetime | None  # aware
    # Title, caption, keywords, camera, position... from XMP, IPTC and EXIF (assets.metadata).
    metadata: EmbeddedMetadata = field(default_factory=EmbeddedMetadata)


def max_image_pixels() -> int:
    return settings.CLETIR_MAX_IMAGE_PIXELS


def inspect_image(path: str | Path) -> ImageInfo:
    """Validate the image at `path` and read what is stored about it; raise FileRejected."""
    limit = max_image_pixels()
    with open(path, "rb") as fh:
        head = fh.read(16)
        if not head:
            raise not_an_image()
        fh.seek(0)
        try:
            im = _open(fh)
        except Image.DecompressionBombError:
            raise decompression_bomb(min(limit, 2 * (Image.MAX_IMAGE_PIXELS or limit))) from None
        except UnidentifiedImageError:
            raise (corrupt() if _looks_like_accepted_image(head) else not_an_image()) from None
        except Exception:
            # Identified by its header, then failed while parsing it: a broken image.
            raise corrupt() from None
        with im:
            info = _check_header(im, limit)
            if im.format != "PNG":
                _decode(im, limit)
                return info
        # PNG chunk CRCs catch damage that still inflates (noisy pixels are stored, not
        # compressed). verify() needs a fresh image, and leaves it unusable for decoding.
        for step in ("verify", "load"):
            fh.seek(0)
            with _open(fh, formats=["PNG"]) as im:
                _decode_or_reject(getattr(im, step), limit)
        return info


def read_file_metadata(path: str | Path) -> EmbeddedMetadata:
    """The embedded metadata of a stored photo (assets.metadata); a file that cannot be opened
    gives none, with the reason in `errors`."""
    try:
        with open(path, "rb") as fh, _open(fh) as im:
            return read_metadata(im)
    except Exception as exc:  # missing, unreadable or no longer an image: noted, never raised
        return EmbeddedMetadata(errors=[f"file: could not be opened ({type(exc).__name__}: {exc})"[:1000]])


def _open(fh, formats: list[str] | None = None) -> Image.Image:
    # Our pixel limit replaces Pillow's warning threshold; Pillow's hard error (twice its
    # MAX_IMAGE_PIXELS) still fires first for absurd sizes and is reported the same way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fh, formats=formats)


def _check_header(im: Image.Image, limit: int) -> ImageInfo:
    """Format, pixel count and EXIF, from the header only: nothing is decoded yet."""
    if im.format not in ACCEPTED_FORMATS:
        raise unsupported_format(im.format or "These")
    stored_format, suffix = ACCEPTED_FORMATS[im.format]
    width, height = im.size
    if width * height > limit:
        raise decompression_bomb(limit)
    exif = _read_exif(im)
    if _orientation(exif) in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(stored_format, suffix, width, height, _taken_at(exif), read_metadata(im))


def _decode(im: Image.Image, limit: int) -> None:
    if im.format in ("JPEG", "MPO"):
        # Decode at 1/8 scale: libjpeg still reads every scan, so truncation shows, at a
        # fraction of the cost of a full decode.
        width, height = im.size
        im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
    _decode_or_reject(im.load, limit)


def _decode_or_reject(step, limit: int) -> None:
    try:
        step()
    except Image.DecompressionBombError:
        raise decompression_bomb(limit) from None
    except Exception:
        raise corrupt() from None

def _read_exif(im: Image.Image) -> Image.Exif | None:
    # A broken EXIF block is common in old scans and edited files; it costs the metadata only.
    try:
        return im.getexif()
    except Exception:
        return None


def _orientation(exif: Image.Exif | None) -> int:
    if exif is None:
        return 1
    try:
        return int(exif.get(ExifTags.Base.Orientation, 1))
    except (TypeError, ValueError):
        return 1


def _taken_at(exif: Image.Exif | None) -> dt.datetime | None:
    """EXIF capture time: DateTimeOriginal (+ OffsetTimeOriginal), else DateTimeDigitized, else
    DateTime (IFD0, 0x0132: the file's last change, which is the capture time unless software
    rewrote the file; scanners and many older cameras write only this one)."""
    if exif is None:
        return None
    try:
        ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:
        ifd = {}
    for stamp, offset in (
        (ifd.get(ExifTags.Base.DateTimeOriginal), ifd.get(ExifTags.Base.OffsetTimeOriginal)),
        (ifd.get(ExifTags.Base.DateTimeDigitized), ifd.get(ExifTags.Base.OffsetTimeDigitized)),
        (exif.get(ExifTags.Base.DateTime), ifd.get(ExifTags.Base.OffsetTime)),
    ):
        moment = parse_exif_datetime(stamp, offset)
        if moment is not None:
            return moment
    return None


def parse_exif_datetime(stamp: object, offset: object = None) -> dt.datetime | None:
    """'2021:05:06 07:08:09' (+ '+02:00') -> an aware datetime; naive times are in TIME_ZONE."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = dt.datetime.strptime(stamp.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # '0000:00:00 00:00:00' and blanks: cameras without a set clock
        return None
    if isinstance(offset, str):
        try:
            return moment.replace(tzinfo=dt.datetime.strptime(offset.strip("\x00 "), "%z").tzinfo)
        except ValueError:
            pass
    return moment.replace(tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))


# One channel of samples wider than 8 bits: scaled into 0-255, never clipped.
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
# The full scale a wide image evidently uses, tried smallest first: a float image in 0-1, an
# integer image that holds 8-bit values, 16-bit values (PNG and TIFF greys open as I;16 or I).
_FULL_SCALES = {"F": (1.0, 255.0, 65535.0), "I": (255.0, 65535.0)}
_BAND_ROWS = 1024  # wide images are converted in bands of rows: bounded memory on huge scans


def to_rgb8(image: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """`image` as 8-bit RGB with its tones kept, whatever mode Pillow decoded it in.

    With `keep_alpha`, an image with transparency (LA, La, PA, RGBA, RGBa, P or L/RGB with a
    transparent colour) comes back as RGBA instead; without it, transparent areas are laid on
    white, as a page shows them. Pillow's own convert() clips samples wider than 8 bits (a
    16-bit grey of 30000/65535 becomes 255: white); here they are scaled (30000 -> 117). 16-bit
    modes use 0-65535; 32-bit integers and floats the range their values evidently use (floats
    0-1, 0-255 or 0-65535; integers 0-255 or 0-65535), else their own minimum to maximum.
    """
    if image.mode in _WIDE_MODES:
        return Image.fromarray(_samples_as_8bit(image)).convert("RGB")
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these only to LA, RGBA
        image = image.convert({"La": "LA", "RGBa": "RGBA"}[image.mode])
    if image.mode not in ("LA", "PA", "RGBA") and "transparency" not in image.info:
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    if keep_alpha:
        return rgba
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _samples_as_8bit(image: Image.Image) -> np.ndarray:
    samples = np.asarray(image)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        finite = samples[np.isfinite(samples)] if image.mode == "F" else samples
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        top = next((top for top in _FULL_SCALES[image.mode] if low >= 0 and high <= top), None)
        if top is not None:
            low, high = 0.0, top
    scale = np.float32(255 / (high - low)) if high > low else np.float32(0)
    out = np.empty(samples.shape, dtype=np.uint8)
    for start in range(0, samples.shape[0], _BAND_ROWS):
        band = samples[start:start + _BAND_ROWS].astype(np.float32)
        band = np.nan_to_num((band - np.float32(low)) * scale, nan=0.0)
        out[start:start + _BAND_ROWS] = np.clip(np.rint(band), 0, 255)
    return out
