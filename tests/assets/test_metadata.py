"""Embedded metadata in: files written here with known XMP, IPTC and EXIF values go through
ingestion and come out as the photo's fields, on its page, in the API and the admin; malformed
blocks are noted and the photo is stored; the backfill reads photos stored before."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from django.core.management import call_command
from iptcinfo3 import IPTCInfo
from PIL import ExifTags, Image, PngImagePlugin

from assets.ingest import ingest_file
from assets.metadata import METADATA_VERSION, normalise_keyword
from assets.models import Asset

from .conftest import image_bytes

pytestmark = pytest.mark.django_db

XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
      xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
      exif:GPSLatitude="48,23.4N" exif:GPSLongitude="4,29.25W" tiff:Make="XMP maker">
   <dc:title><rdf:Alt><rdf:li xml:lang="fr">Le port</rdf:li><rdf:li xml:lang="x-default">Harbour at dawn</rdf:li></rdf:Alt></dc:title>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Fishing boats
leaving Brest</rdf:li></rdf:Alt></dc:description>
   <dc:subject><rdf:Bag><rdf:li>Boats</rdf:li><rdf:li>  Golden   Hour </rdf:li><rdf:li>Brest</rdf:li></rdf:Bag></dc:subject>
   <dc:creator><rdf:Seq><rdf:li>Ann Smith</rdf:li><rdf:li>Bob Jones</rdf:li></rdf:Seq></dc:creator>
   <dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© 2021 Ann Smith</rdf:li></rdf:Alt></dc:rights>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>"""

# An XMP packet declaring an entity: what an XML bomb starts with. defusedxml refuses it.
XMP_WITH_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
)


def camera_exif(latitude=(33.0, 51.0, 36.0), latitude_ref="S") -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "NIKON CORPORATION\x00"  # cameras pad with NULs; Postgres text refuses them
    exif[ExifTags.Base.Model] = "NIKON D750"
    exif[ExifTags.Base.Artist] = "EXIF artist"
    exif[ExifTags.Base.Copyright] = "Photographer\x00Editor"
    exif[ExifTags.Base.ImageDescription] = "EXIF description"
    exif[0x9C9E] = "Sea;Boats".encode("utf-16-le") + b"\x00\x00"  # XPKeywords, as Windows writes them
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: latitude_ref, ExifTags.GPS.GPSLatitude: latitude,
        ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (151.0, 12.0, 36.0),
    }
    return exif


def with_iptc(jpeg: bytes, tmp_path: Path, datasets: dict, charset: str | None = None) -> bytes:
    """`jpeg` with an IPTC-IIM block (APP13) written by iptcinfo3 (a maintained IPTC writer)."""
    path = tmp_path / "iptc-source.jpg"
    path.write_bytes(jpeg)
    info = IPTCInfo(str(path), force=True, inp_charset=charset, out_charset=charset)
    for name, value in datasets.items():
        info[name] = value
    info.save_as(str(tmp_path / "iptc.jpg"))
    return (tmp_path / "iptc.jpg").read_bytes()


IPTC = {"object name": "IPTC title", "caption/abstract": "IPTC caption", "by-line": "IPTC creator",
        "copyright notice": "IPTC copyright", "keywords": ["Sailing", "boats", "Café"]}


@pytest.fixture(autouse=True)
def quiet_iptcinfo():
    logging.getLogger("iptcinfo").setLevel(logging.ERROR)  # it warns about files without IPTC


def ingest(library, data: bytes, name: str = "photo.jpg") -> Asset:
    outcome = ingest_file(library, io.BytesIO(data), name)
    assert outcome.status == "stored", outcome
    return Asset.objects.get(pk=outcome.asset_id)


def fields(asset: Asset) -> dict:
    return {name: getattr(asset, name) for name in (
        "title", "caption", "keywords", "creator", "copyright", "camera_make", "camera_model", "latitude",
        "longitude", "metadata_error", "metadata_version")}


def test_xmp_iptc_and_exif_are_read_into_the_photo_xmp_first(library, tmp_path):
    jpeg = image_bytes("JPEG", exif=camera_exif(), xmp=XMP.encode())
    asset = ingest(library, with_iptc(jpeg, tmp_path, IPTC))

    assert fields(asset) == {
        "title": "Harbour at dawn",  # the x-default alternative, not the first one
        "caption": "Fishing boats\nleaving Brest",
        # XMP's, then IPTC's, then Windows' keywords: each once, normalised
        "keywords": ["boats", "golden hour", "brest", "sailing", "café", "sea"],
        "creator": "Ann Smith; Bob Jones",
        "copyright": "© 2021 Ann Smith",
        "camera_make": "NIKON CORPORATION",  # EXIF, the camera's own, before XMP's tiff:Make
        "camera_model": "NIKON D750",
        "latitude": -33.86, "longitude": 151.21,  # EXIF GPS before XMP's
        "metadata_error": "", "metadata_version": METADATA_VERSION,
    }


def test_iptc_fills_what_xmp_lacks_and_exif_what_both_lack(library, tmp_path):
    only_iptc = ingest(library, with_iptc(image_bytes("JPEG", seed=1), tmp_path, IPTC))
    assert fields(only_iptc) | {"metadata_version": 0} == {
        "title": "IPTC title", "caption": "IPTC caption", "keywords": ["sailing", "boats", "café"],
        "creator": "IPTC creator", "copyright": "IPTC copyright", "camera_make": "", "camera_model": "",
        "latitude": None, "longitude": None, "metadata_error": "", "metadata_version": 0,
    }
    only_exif = ingest(library, image_bytes("JPEG", seed=2, exif=camera_exif()))
    assert (only_exif.title, only_exif.caption, only_exif.creator, only_exif.copyright, only_exif.keywords) == (
        "", "EXIF description", "EXIF artist", "Photographer; Editor", ["sea", "boats"])


def test_legacy_iptc_text_in_latin_1_is_decoded(library, tmp_path):
    asset = ingest(library, with_iptc(image_bytes("JPEG"), tmp_path, {"keywords": ["Café", "Zürich"], "by-line": "Søren"},
                                      charset="iso8859_1"))
    assert (asset.keywords, asset.creator) == (["café", "zürich"], "Søren")


def test_xmp_gps_is_used_when_exif_has_none(library):
    asset = ingest(library, image_bytes("JPEG", xmp=XMP.encode()))
    assert (asset.latitude, asset.longitude, asset.camera_make) == (48.39, -4.4875, "XMP maker")


def test_png_and_tiff_carry_xmp_and_tiff_carries_iptc(library, tmp_path):
    png = ingest(library, image_bytes("PNG", pnginfo=_xmp_chunk()), "photo.png")
    assert (png.title, png.keywords[:2]) == ("Harbour at dawn", ["boats", "golden hour"])

    # The IIM bytes iptcinfo3 wrote into a JPEG's APP13, stored in TIFF's IPTC tag (33723).
    iim = Image.open(io.BytesIO(with_iptc(image_bytes("JPEG"), tmp_path, IPTC))).info["photoshop"][0x0404]
    tiff = ingest(library, image_bytes("TIFF", seed=3, tiffinfo={33723: iim, 700: XMP.encode()}), "scan.tif")
    assert (tiff.title, tiff.keywords) == ("Harbour at dawn", ["boats", "golden hour", "brest", "sailing", "café"])


@pytest.mark.parametrize(("fmt", "name"), [("WEBP", "phone.webp"), ("HEIF", "phone.heic")])
def test_webp_and_heif_carry_exif_and_xmp(library, fmt, name):
    asset = ingest(library, image_bytes(fmt, exif=camera_exif(), xmp=XMP.encode()), name)
    assert (asset.title, asset.camera_model, asset.latitude, asset.keywords[:2]) == (
        "Harbour at dawn", "NIKON D750", -33.86, ["boats", "golden hour"])


@pytest.mark.parametrize(("xmp", "error"), [
    (b"<x:xmpmeta><rdf:RDF", "XMP: could not be read (ParseError: unbound prefix: line 1, column 0)"),
    (XMP_WITH_ENTITY.encode(), "XMP: could not be read (EntitiesForbidden: EntitiesForbidden(name='a', "
                               "system_id=None, public_id=None))"),
])
def test_a_malformed_xmp_block_is_noted_and_the_photo_stored_with_the_other_blocks(library, tmp_path, xmp, error):
    jpeg = image_bytes("JPEG", exif=camera_exif(), xmp=xmp)
    asset = ingest(library, with_iptc(jpeg, tmp_path, IPTC))

    assert asset.metadata_error == error
    assert (asset.title, asset.camera_model, asset.keywords) == ("IPTC title", "NIKON D750",
                                                                 ["sailing", "boats", "café", "sea"])
    assert Path(asset.file.path).read_bytes()[:2] == b"\xff\xd8"


def test_a_malformed_iptc_block_is_noted_and_the_photo_stored(library, tmp_path):
    jpeg = with_iptc(image_bytes("JPEG", xmp=XMP.encode()), tmp_path, IPTC)
    # Every IIM dataset starts with the tag marker 0x1C: break the first one.
    broken = jpeg.replace(b"\x1c\x02\x00", b"\x1d\x02\x00", 1)
    assert broken != jpeg

    asset = ingest(library, broken)
    assert asset.metadata_error == "IPTC: could not be read (SyntaxError: invalid IPTC/NAA file)"
    assert (asset.title, asset.keywords) == ("Harbour at dawn", ["boats", "golden hour", "brest"])


def test_a_position_off_the_globe_is_noted_and_costs_only_the_position(library):
    asset = ingest(library, image_bytes("JPEG", exif=camera_exif(latitude=(95.0, 0.0, 0.0), latitude_ref="N")))
    assert asset.metadata_error == ("EXIF GPS: could not be read (ValueError: GPS position 95, 151.21 is "
                                    "outside the globe)")
    assert (asset.latitude, asset.longitude, asset.camera_model) == (None, None, "NIKON D750")


def test_a_photo_without_metadata_gets_empty_fields(library):
    asset = ingest(library, image_bytes("WEBP"), "plain.webp")
    assert fields(asset) == {
        "title": "", "caption": "", "keywords": [], "creator": "", "copyright": "", "camera_make": "",
        "camera_model": "", "latitude": None, "longitude": None, "metadata_error": "",
        "metadata_version": METADATA_VERSION,
    }


def test_keywords_are_normalised_so_a_filter_matches_them_however_written(library):
    assert normalise_keyword("  Golden\tGATE  Bridge ") == "golden gate bridge"
    assert normalise_keyword("Cafe\u0301") == "café"  # decomposed é (NFD) is stored composed
    asset = ingest(library, image_bytes("JPEG", xmp=XMP.encode()))
    assert list(Asset.objects.filter(keywords__contains=[normalise_keyword("GOLDEN HOUR")])) == [asset]


def test_the_backfill_reads_photos_stored_before_and_is_idempotent(library, tmp_path, media_root):
    described = ingest(library, with_iptc(image_bytes("JPEG", seed=5), tmp_path, IPTC))
    plain = ingest(library, image_bytes("PNG", seed=6), "plain.png")
    missing = ingest(library, image_bytes("JPEG", seed=7), "gone.jpg")
    Path(missing.file.path).unlink()
    # As photos stored before metadata was read at upload: empty fields, never read.
    Asset.objects.update(title="", caption="", keywords=[], creator="", copyright="", metadata_version=0)

    out = io.StringIO()
    call_command("read_photo_metadata", "--batch", "2", stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ("Read the embedded metadata of 3 photos; 1 with a block or file that could not be "
                              "read (see metadata_error).\n")
    described.refresh_from_db(), plain.refresh_from_db(), missing.refresh_from_db()
    assert (described.title, described.keywords, described.metadata_version) == (
        "IPTC title", ["sailing", "boats", "café"], METADATA_VERSION)
    assert (plain.title, plain.metadata_error, plain.metadata_version) == ("", "", METADATA_VERSION)
    assert missing.metadata_error.startswith("file: could not be opened (FileNotFoundError: ")

    again = io.StringIO()
    call_command("read_photo_metadata", stdout=again, stderr=io.StringIO())
    assert again.getvalue().startswith("Read the embedded metadata of 0 photos;")


def test_the_photo_page_the_api_and_the_admin_show_the_metadata(library, owner, client, tmp_path):
    jpeg = image_bytes("JPEG", exif=camera_exif(), xmp=XMP.encode())
    asset = ingest(library, with_iptc(jpeg, tmp_path, IPTC))
    other = ingest(library, image_bytes("JPEG", seed=9), "other.jpg")
    client.force_login(owner)

    page = client.get(f"/libraries/{library.pk}/photos/{asset.pk}/").content.decode()
    for shown in ("Harbour at dawn", "Fishing boats<br>leaving Brest", '<span class="keyword">golden hour</span>',
                  "Ann Smith; Bob Jones", "© 2021 Ann Smith", "NIKON CORPORATION NIKON D750", "-33.86000, 151.21000"):
        assert shown in page

    body = client.get(f"/api/assets/{asset.pk}/").json()
    assert {name: body[name] for name in (
        "title", "caption", "keywords", "creator", "copyright", "camera_make", "camera_model", "latitude",
        "longitude", "metadata_error")} == {
        "title": "Harbour at dawn", "caption": "Fishing boats\nleaving Brest",
        "keywords": ["boats", "golden hour", "brest", "sailing", "café", "sea"], "creator": "Ann Smith; Bob Jones",
        "copyright": "© 2021 Ann Smith", "camera_make": "NIKON CORPORATION", "camera_model": "NIKON D750",
        "latitude": -33.86, "longitude": 151.21, "metadata_error": "",
    }

    owner.is_staff = owner.is_superuser = True
    owner.save()
    found = client.get("/admin/assets/asset/", {"q": "Golden Hour"}).context["cl"].result_list
    assert list(found) == [asset]
    with_gps = client.get("/admin/assets/asset/", {"metadata": "gps"}).context["cl"].result_list
    assert list(with_gps) == [asset]
    without = client.get("/admin/assets/asset/", {"metadata": "no_keywords"}).context["cl"].result_list
    assert list(without) == [other]


def test_uploads_and_import_folder_both_read_the_metadata(library, owner, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(owner)
    upload = SimpleUploadedFile("sent.jpg", with_iptc(image_bytes("JPEG", seed=11), tmp_path, IPTC))
    answer = client.post(f"/api/libraries/{library.pk}/upload/", {"files": [upload]}, format="multipart")
    assert Asset.objects.get(pk=answer.json()["results"][0]["asset_id"]).title == "IPTC title"

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "scan.png").write_bytes(image_bytes("PNG", seed=12, pnginfo=_xmp_chunk()))
    call_command("import_folder", str(folder), "--library", library.name, "--owner", owner.username,
                 stdout=io.StringIO(), stderr=io.StringIO())
    assert Asset.objects.get(original_name="scan.png").keywords == ["boats", "golden hour", "brest"]


def _xmp_chunk() -> PngImagePlugin.PngInfo:
    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", XMP)
    return text
