"""Renditions: the same files through libvips as through Pillow (sizes, formats, orientation,
tones), the per-photo fallback to Pillow, failures recorded, and deletes that leave no file."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import pyvips
import tifffile
from PIL import Image

from assets import rendering
from assets.ingest import ingest_file
from assets.models import Asset, Rendition
from assets.renditions import ERROR_PREFIX, claim_photos, jobs_for, new_claim, record_renditions, render_job
from assets.services import delete_assets
from assets.tasks import make_renditions

from .conftest import exif_with, image_bytes

pytestmark = pytest.mark.django_db

SPECS = [rendering.RenditionSpec("preview", 1600, "JPEG"), rendering.RenditionSpec("thumb", 320, "WEBP")]
ENGINES = {"libvips": rendering.render_with_libvips, "pillow": rendering.render_with_pillow}


def rendition_files(media_root):
    return sorted(p for p in (media_root / "renditions").rglob("*") if p.is_file())


def decoded(rendition: rendering.EncodedRendition) -> Image.Image:
    image = Image.open(io.BytesIO(rendition.data))
    image.load()
    return image


def write(tmp_path, name: str, image: Image.Image, fmt: str, **save) -> str:
    path = tmp_path / name
    image.save(path, format=fmt, **save)
    return str(path)


@pytest.fixture
def engine_calls(monkeypatch):
    """Which engine rendered each photo (the real engines still run)."""
    calls = []
    for name, function in ENGINES.items():
        def spy(path, specs, _name=name, _function=function):
            calls.append(_name)
            return _function(path, specs)
        monkeypatch.setattr(rendering, f"render_with_{name}", spy)
    return calls


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
    assert (asset.status, asset.error, asset.renditions_claim, asset.renditions_claimed_at) == ("ready", "", "", None)
    with Image.open(media_root / first["thumb"][0]) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (160, 320))
    with Image.open(media_root / first["preview"][0]) as preview:
        assert (preview.format, preview.size) == ("JPEG", (800, 1600))


@pytest.mark.parametrize("size", [(4000, 3000), (2887, 1033), (1033, 2887), (1601, 400), (6000, 900), (640, 480), (100, 50)])
def test_libvips_makes_the_files_pillow_made(tmp_path, size):
    # Smooth structure, like a photo: the two engines' resampling must agree on it.
    rng = np.random.default_rng(3)
    coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    path = write(tmp_path, "photo.jpg", coarse, "JPEG", quality=92)

    by_vips, by_pillow = rendering.render_with_libvips(path, SPECS), rendering.render_with_pillow(path, SPECS)

    for vips_made, pillow_made in zip(by_vips, by_pillow, strict=True):
        assert (vips_made.name, vips_made.suffix) == (pillow_made.name, pillow_made.suffix)
        spec = next(s for s in SPECS if s.name == vips_made.name)
        longest = min(spec.max_side, max(size))  # bounded, never upscaled
        assert max(vips_made.width, vips_made.height) == max(pillow_made.width, pillow_made.height) == longest
        # Rounding of the short side may differ by a pixel (2887x1033 -> 320x115 or 320x114).
        assert abs(min(vips_made.width, vips_made.height) - min(pillow_made.width, pillow_made.height)) <= 1
        vips_image, pillow_image = decoded(vips_made), decoded(pillow_made)
        assert vips_image.format == pillow_image.format == spec.format
        assert (vips_image.width, vips_image.height) == (vips_made.width, vips_made.height)
        if vips_image.size == pillow_image.size:  # same grid: the same picture, to a few levels
            difference = np.abs(np.asarray(vips_image.convert("RGB"), dtype=float)
                                - np.asarray(pillow_image.convert("RGB"), dtype=float))
            assert difference.mean() < 4, (vips_made.name, difference.mean())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, engine, orientation):
    # A red block in the stored top-left corner; where it must be seen once the photo is upright.
    stored = Image.new("RGB", (800, 400), (128, 128, 128))
    stored.paste((255, 0, 0), (0, 0, 200, 100))
    path = write(tmp_path, "p.jpg", stored, "JPEG", exif=exif_with(orientation=orientation).tobytes())

    preview = decoded(ENGINES[engine](path, SPECS)[0])

    width, height = preview.size
    assert (width, height) == ((400, 800) if orientation in (6, 8) else (800, 400))
    corners = {"top-left": (5, 5), "top-right": (width - 6, 5), "bottom-left": (5, height - 6),
               "bottom-right": (width - 6, height - 6)}
    red = {name for name, xy in corners.items() if preview.getpixel(xy)[0] > 200 and preview.getpixel(xy)[1] < 60}
    assert red == {{1: "top-left", 3: "bottom-right", 6: "top-right", 8: "bottom-left"}[orientation]}


@pytest.mark.parametrize("engine", ENGINES)
def test_transparency_is_laid_on_white_in_the_jpeg_and_kept_in_the_webp(tmp_path, engine):
    image = Image.new("RGBA", (400, 200), (200, 0, 0, 255))
    image.paste((0, 0, 0, 0), (200, 0, 400, 200))  # right half fully transparent
    path = write(tmp_path, "p.png", image, "PNG")

    preview, thumb = (decoded(r) for r in ENGINES[engine](path, SPECS))

    assert preview.mode == "RGB"
    assert preview.getpixel((300, 100)) == (255, 255, 255)
    assert preview.getpixel((100, 100))[0] > 180 and preview.getpixel((100, 100))[1] < 30
    assert thumb.mode == "RGBA" and thumb.getpixel((300, 100))[3] == 0 and thumb.getpixel((100, 100))[3] == 255


def test_a_16_bit_grey_png_keeps_its_tone(tmp_path):
    # Level 30000 of 65535 is 116.7 of 255 (issue 12.7: it came out white, 255).
    path = write(tmp_path, "grey16.png", Image.fromarray(np.full((300, 400), 30000, dtype=np.uint16)), "PNG")

    for rendition in rendering.render_with_libvips(path, SPECS):
        pixels = np.asarray(decoded(rendition).convert("RGB"), dtype=float)
        assert abs(pixels.mean() - 116.7) < 2, rendition.name


def test_a_16_bit_rgb_png_and_tiff_keep_their_tones(tmp_path):
    levels = np.array([30000, 60000, 1000], dtype=np.uint16)
    pixels = np.broadcast_to(levels, (300, 400, 3)).copy()
    png = tmp_path / "rgb16.png"
    pyvips.Image.new_from_array(pixels).copy(interpretation="rgb16").pngsave(str(png))
    tiff = tmp_path / "rgb16.tif"
    tifffile.imwrite(tiff, pixels, photometric="rgb")

    for path in (png, tiff):
        for rendition in rendering.render_with_libvips(path, SPECS):
            means = np.asarray(decoded(rendition).convert("RGB"), dtype=float).mean(axis=(0, 1))
            assert np.allclose(means, levels / 257, atol=2), (path.name, rendition.name, means)


@pytest.mark.parametrize("interpretation, bands", [("srgb", 3), ("srgb", 4), ("b-w", 1), ("multiband", 3)])
def test_16_bit_samples_labelled_as_8_bit_are_scaled_not_clipped_to_white(interpretation, bands):
    pixels = np.full((8, 8, bands), 30000, dtype=np.uint16)
    image = pyvips.Image.new_from_array(pixels).copy(interpretation=interpretation)

    converted = rendering.to_srgb8(image)

    assert (converted.format, converted.interpretation, converted.bands) == ("uchar", "srgb", 3 if bands < 4 else 4)
    assert abs(converted.avg() - 116.7) < 1


def test_greyscale_comes_out_as_rgb_with_its_tone(tmp_path):
    for fmt, name in (("JPEG", "grey.jpg"), ("PNG", "grey.png")):
        path = write(tmp_path, name, Image.new("L", (400, 300), 117), fmt)
        for rendition in rendering.render_with_libvips(path, SPECS):
            image = decoded(rendition)
            assert image.mode == "RGB"
            assert np.allclose(np.asarray(image, dtype=float).mean(axis=(0, 1)), 117, atol=2)


def test_cmyk_is_converted_to_rgb_not_inverted(tmp_path):
    # Through libvips' CMYK profile: paper white stays white, full black ink is dark, and
    # magenta + yellow (no cyan) read as red-orange. An inverted or naive conversion fails one.
    for cmyk, expect in (((0, 0, 0, 0), "white"), ((0, 0, 0, 255), "dark"), ((0, 128, 255, 0), "orange")):
        for fmt, name in (("JPEG", "cmyk.jpg"), ("TIFF", "cmyk.tif")):
            path = write(tmp_path, name, Image.new("CMYK", (400, 300), cmyk), fmt)
            r, g, b = np.asarray(decoded(rendering.render_with_libvips(path, SPECS)[0]), dtype=float).mean(axis=(0, 1))
            if expect == "white":
                assert min(r, g, b) > 240, (name, r, g, b)
            elif expect == "dark":
                assert max(r, g, b) < 70, (name, r, g, b)
            else:
                assert r > 220 and 100 < g < 170 and b < 60, (name, r, g, b)


def test_heic_and_float_tiffs_fall_back_to_pillow_per_photo(library, tmp_path, engine_calls):
    assert not rendering.libvips_decodes("HEIF")  # this wheel's libheif has no HEVC decoder
    heic = ingest_file(library, io.BytesIO(image_bytes("HEIF", size=(640, 480))), "IMG.HEIC").asset_id
    jpeg = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(640, 480))), "a.jpg").asset_id
    floats = io.BytesIO()
    tifffile.imwrite(floats, np.full((300, 400), 0.5, dtype=np.float32), photometric="minisblack")
    tiff = ingest_file(library, io.BytesIO(floats.getvalue()), "scan.tif").asset_id
    assert Asset.objects.get(pk=tiff).format == "TIFF"

    for asset_id in (heic, jpeg, tiff):
        assert make_renditions(asset_id) == ["preview", "thumb"]

    # HEIC: never tried in libvips; JPEG: libvips; the float TIFF: libvips declines, Pillow makes it.
    assert engine_calls == ["pillow", "libvips", "libvips", "pillow"]
    assert Rendition.objects.get(asset_id=heic, name="thumb").width == 320
    assert Rendition.objects.get(asset_id=tiff, name="thumb").width == 320


def test_pillow_engine_setting_and_a_missing_libvips(library, settings, engine_calls, monkeypatch):
    first = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=1)), "a.jpg").asset_id
    second = ingest_file(library, io.BytesIO(image_bytes("PNG", seed=2)), "b.png").asset_id

    settings.CLETIR_RENDITION_ENGINE = "pillow"
    assert make_renditions(first) == ["preview", "thumb"]
    settings.CLETIR_RENDITION_ENGINE = "libvips"
    monkeypatch.setattr(rendering, "libvips_available", lambda: False)
    rendering.libvips_decodes.cache_clear()
    try:
        assert make_renditions(second) == ["preview", "thumb"]
    finally:
        rendering.libvips_decodes.cache_clear()
    assert engine_calls == ["pillow", "pillow"]


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


def test_failure_marks_the_photo_failed_without_raising(library, media_root):
    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG")), "gone.jpg").asset_id
    os.remove(Asset.objects.get(pk=asset_id).file.path)

    assert make_renditions.apply(args=[asset_id]).get() == []
    asset = Asset.objects.get(pk=asset_id)
    assert asset.status == "failed" and asset.error.startswith(ERROR_PREFIX)
    assert "No such file" in asset.error
    assert (asset.renditions_claim, asset.renditions_claimed_at) == ("", None)
    assert not Rendition.objects.filter(asset_id=asset_id).exists()
    assert make_renditions(asset_id) == []  # failed is final: not tried again by a duplicate


def test_a_damaged_photo_fails_with_the_reason_pillow_gives(library, media_root, engine_calls):
    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(640, 480))), "cut.jpg").asset_id
    path = Asset.objects.get(pk=asset_id).file.path
    with open(path, "r+b") as fh:  # damaged on disk after it was accepted
        fh.truncate(os.path.getsize(path) // 2)

    assert make_renditions(asset_id) == []

    asset = Asset.objects.get(pk=asset_id)
    assert asset.status == "failed"
    assert asset.error.startswith(f"{ERROR_PREFIX}image file is truncated")
    assert engine_calls == ["libvips", "pillow"]  # libvips refused it; Pillow's reason is recorded


def test_deleted_photo_is_a_no_op(library):
    assert make_renditions.apply(args=[987654]).get() == []


def test_a_photo_deleted_while_it_renders_leaves_no_file(library, media_root):
    # Claimed and rendered, then deleted (with its library's delete service) before the worker
    # records it: the recording finds the photo gone and removes what it wrote.
    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(640, 480))), "a.jpg").asset_id
    claim = new_claim()
    [job] = jobs_for(claim_photos(claim, limit=10))
    encoded = render_job(job)
    delete_assets(Asset.objects.filter(pk=asset_id))

    assert record_renditions(asset_id, encoded) == []
    assert rendition_files(media_root) == []
    assert list((media_root / "incoming").iterdir()) == []
    assert not Rendition.objects.exists()


def test_a_failed_recording_removes_the_files_it_placed(library, media_root, monkeypatch):
    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(640, 480))), "a.jpg").asset_id
    [job] = jobs_for(claim_photos(new_claim(), limit=10))
    encoded = render_job(job)

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Rendition, "save", fail)
    with pytest.raises(OSError):
        record_renditions(asset_id, encoded)
    assert rendition_files(media_root) == [] and list((media_root / "incoming").iterdir()) == []


def test_tasks_are_discovered_and_routed_to_the_default_queue():
    from celery.loaders.base import find_related_module

    from cletir_site.celery import app

    # What app.autodiscover_tasks() does for each installed app.
    assert find_related_module("assets", "tasks").__name__ == "assets.tasks"
    for name in ("assets.tasks.make_renditions", "assets.tasks.render_pending_photos"):
        assert name in app.tasks
        route = app.amqp.router.route({}, name, args=(1,), kwargs={})
        assert route["queue"].name == "default"
