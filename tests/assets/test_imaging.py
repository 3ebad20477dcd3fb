"""`to_rgb8`: every mode Pillow opens becomes 8-bit RGB with its tones kept, and renditions and
indexing both decode through it (a 16-bit grey of 30000/65535 is ~117, not white)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from assets.imaging import to_rgb8
from assets.ingest import ingest_file
from assets.models import Asset, Rendition
from assets.renditions import make_renditions
from retrieval.indexing.photos import decode_for_embedding

LEVEL_16 = 30000  # of 65535: 116.7 in 8 bits
GREY_8 = 117


def reopened(image: Image.Image, fmt: str, **options) -> Image.Image:
    """`image` written as `fmt` and opened again, as an upload would be."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    out.seek(0)
    return Image.open(out)


def grey16(mode: str = "I;16", size=(6, 4)) -> Image.Image:
    return Image.new(mode, size, LEVEL_16)


def png(width: int, height: int, bit_depth: int, colour_type: int, row: bytes) -> bytes:
    """A PNG written by hand: Pillow writes no 16-bit colour PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = b"".join(b"\0" + row for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def rgb16_tiff(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF, written by hand (Pillow writes none)."""
    pixels = struct.pack("<HHH", *rgb) * (width * height)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, None), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 6
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag == 273:
            value = pixels_at
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 16, 16, 16) + pixels


def mean(image: Image.Image) -> list[float]:
    return [round(float(v), 1) for v in np.asarray(image, dtype=np.float64).reshape(-1, len(image.getbands())).mean(0)]


def p_with_transparency() -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 90, 120, 150])
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    return image


def palette_alpha() -> Image.Image:
    image = Image.new("PA", (4, 4), (1, 0))
    image.putpalette([0, 0, 0, 90, 120, 150])
    return image


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: reopened(grey16(), "PNG"), [GREY_8] * 3),                     # 16-bit grey PNG: I;16
    (lambda: reopened(grey16(), "TIFF"), [GREY_8] * 3),                    # 16-bit grey TIFF: I;16
    (lambda: reopened(grey16("I;16B"), "TIFF"), [GREY_8] * 3),             # big-endian TIFF: I;16B
    (lambda: grey16("I;16L"), [GREY_8] * 3),
    (lambda: grey16("I;16N"), [GREY_8] * 3),
    (lambda: reopened(Image.new("I", (6, 4), LEVEL_16), "TIFF"), [GREY_8] * 3),  # 32-bit int, 16-bit values
    (lambda: reopened(Image.new("I", (6, 4), 200), "TIFF"), [200] * 3),          # 32-bit int, 8-bit values
    (lambda: reopened(Image.new("F", (6, 4), LEVEL_16 / 65535), "TIFF"), [GREY_8] * 3),  # float 0-1
    (lambda: reopened(Image.new("F", (6, 4), float(LEVEL_16)), "TIFF"), [GREY_8] * 3),    # float 0-65535
    (lambda: Image.open(io.BytesIO(png(3, 2, 16, 2, struct.pack(">HHH", 30000, 10000, 60000) * 3))),
     [117, 39, 233]),                                                      # 16-bit RGB PNG
    (lambda: Image.open(io.BytesIO(rgb16_tiff(3, 2, (30000, 10000, 60000)))), [117, 39, 233]),  # 16-bit RGB TIFF
    (lambda: reopened(Image.new("L", (6, 4), 90), "PNG"), [90] * 3),
    (lambda: reopened(Image.new("1", (6, 4), 1), "PNG"), [255] * 3),
    (lambda: reopened(Image.new("CMYK", (6, 4), (0, 0, 0, 128)), "JPEG", quality=100), [127] * 3),
    (lambda: Image.new("YCbCr", (6, 4), (117, 128, 128)), [117] * 3),
    (lambda: Image.new("RGB", (6, 4), (10, 20, 30)), [10, 20, 30]),
])
def test_every_mode_becomes_8bit_rgb_with_its_tones(make, expected):
    converted = to_rgb8(make())
    assert converted.mode == "RGB"
    assert mean(converted) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize(("make", "colour", "alpha"), [
    (lambda: reopened(Image.new("LA", (4, 4), (90, 0)), "PNG"), (90, 90, 90), 0),
    (lambda: Image.new("LA", (4, 4), (90, 0)).convert("La"), None, 0),
    (lambda: reopened(Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "PNG"), (10, 20, 30), 0),
    (lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)).convert("RGBa"), None, 0),
    (lambda: reopened(p_with_transparency(), "PNG"), (0, 0, 0), 0),
    (lambda: palette_alpha(), (90, 120, 150), 0),
])
def test_transparency_is_kept_on_request_and_laid_on_white_otherwise(make, colour, alpha):
    image = make()
    kept = to_rgb8(image, keep_alpha=True)
    assert kept.mode == "RGBA"
    assert kept.getpixel((0, 0))[3] == alpha
    if colour is not None:
        assert kept.getpixel((0, 0))[:3] == colour
    flat = to_rgb8(make())
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255)  # transparent: white


def test_an_opaque_palette_image_with_transparency_keeps_its_opaque_colours():
    flat = to_rgb8(reopened(p_with_transparency(), "PNG"))
    assert flat.getpixel((1, 1)) == (90, 120, 150)


@pytest.mark.django_db
def test_a_16bit_grey_photo_is_grey_in_its_renditions_and_for_indexing(library, media_root):
    data = io.BytesIO()
    grey16(size=(600, 400)).save(data, format="PNG")
    outcome = ingest_file(library, io.BytesIO(data.getvalue()), "scan-16bit.png")
    assert outcome.status == "stored"

    assert sorted(make_renditions(outcome.asset_id)) == ["preview", "thumb"]
    for rendition in Rendition.objects.filter(asset_id=outcome.asset_id):
        with Image.open(media_root / rendition.file.name) as image:
            assert mean(image.convert("RGB")) == pytest.approx([GREY_8] * 3, abs=1), rendition.name
    embedded = decode_for_embedding(Asset.objects.get(pk=outcome.asset_id).file.path)
    assert embedded.mode == "RGB" and mean(embedded) == pytest.approx([GREY_8] * 3, abs=1)


def test_a_large_16bit_photo_is_reduced_for_indexing(tmp_path):
    """Pillow reduces no 16-bit mode: the photo is converted first."""
    path = tmp_path / "big.png"
    grey16(size=(1200, 800)).save(path)
    embedded = decode_for_embedding(str(path))
    assert embedded.mode == "RGB" and embedded.size == (400, 267)
    assert mean(embedded) == pytest.approx([GREY_8] * 3, abs=1)
