"""What a photo says about itself: title, caption, keywords, creator, copyright, camera and GPS
position, read from its embedded XMP, IPTC and EXIF blocks with Pillow's own readers.

Readers (none of the blocks is parsed here by hand):

* XMP: `Image.getxmp()` (JPEG APP1, PNG iTXt, WebP, TIFF tag 700, GIF, HEIF), whose XML goes
  through defusedxml, so entity expansion ("billion laughs") and external entities are refused;
* IPTC-IIM: `IptcImagePlugin.getiptcinfo()` (JPEG APP13 Photoshop resource 0x0404, TIFF tag
  33723);
* EXIF: `Image.getexif()` (IFD0 text tags, Windows' XP tags, the GPS IFD).

Where blocks disagree, XMP wins over IPTC, and IPTC over EXIF's text tags, as the Metadata
Working Group's guidelines say for descriptive fields (XMP is what current software writes and
edits; the others are legacy copies). Camera and position come from EXIF first: the camera
writes them there. Keywords are the union of XMP dc:subject, IPTC 2:25 and Windows' XPKeywords.

A block that cannot be read costs its own fields only: the photo is stored, and `errors` says
which block failed and why (kept as Asset.metadata_error).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import ExifTags, Image, IptcImagePlugin

# The version of this reader. Photos carry the version that read them (Asset.metadata_version);
# `manage.py read_photo_metadata` reads again every photo read by an older one (or none).
METADATA_VERSION = 1

# Field lengths of Asset; longer values are cut here, so no odd file can fail a row's insert.
MAX_TEXT = 500
MAX_CAPTION = 10_000
MAX_KEYWORD = 100
MAX_KEYWORDS = 200

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_EXIF_NS = "{http://ns.adobe.com/exif/1.0/}"
_TIFF_NS = "{http://ns.adobe.com/tiff/1.0/}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# IPTC-IIM datasets (record 2, "application"), and record 1's coded character set.
_IPTC_TITLE, _IPTC_KEYWORDS, _IPTC_CREATOR = (2, 5), (2, 25), (2, 80)
_IPTC_COPYRIGHT, _IPTC_CAPTION, _IPTC_CHARSET = (2, 116), (2, 120), (1, 90)
_IPTC_UTF8 = b"\x1b%G"

# Windows Explorer writes these EXIF tags (UTF-16LE), keywords separated by semicolons.
_XP_TITLE, _XP_KEYWORDS = 0x9C9B, 0x9C9E

# Control characters (Postgres refuses NUL in text; the others garble pages and CSV files).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class EmbeddedMetadata:
    """The fields a photo's blocks gave; empty strings and None where none had them."""

    title: str = ""
    caption: str = ""
    keywords: list[str] = field(default_factory=list)  # normalised (normalise_keyword), unique
    creator: str = ""
    copyright: str = ""
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = None  # WGS 84 degrees, north positive
    longitude: float | None = None  # east positive
    errors: list[str] = field(default_factory=list)  # one line per block that could not be read

    def asset_fields(self) -> dict[str, Any]:
        """The values of Asset's metadata fields."""
        return {
            "title": self.title, "caption": self.caption, "keywords": self.keywords, "creator": self.creator,
            "copyright": self.copyright, "camera_make": self.camera_make, "camera_model": self.camera_model,
            "latitude": self.latitude, "longitude": self.longitude, "metadata_error": "\n".join(self.errors),
            "metadata_version": METADATA_VERSION,
        }


# Asset fields that read_metadata fills (what the backfill updates).
METADATA_FIELDS = tuple(EmbeddedMetadata().asset_fields())


def normalise_keyword(text: str) -> str:
    """The form keywords are stored and matched in: Unicode NFC, whitespace collapsed, lower
    case ('  Golden  Gate ' and 'golden gate' are one keyword)."""
    return " ".join(unicodedata.normalize("NFC", _CONTROL.sub(" ", text)).split()).lower()[:MAX_KEYWORD]


def read_metadata(im: Image.Image) -> EmbeddedMetadata:
    """The embedded metadata of an opened image (its header only: nothing is decoded). Never
    raises: a block that fails is noted in `errors` and gives nothing. A position that makes no
    sense is noted apart, so it costs only the position, not the camera or the caption."""
    errors: list[str] = []
    properties = _guarded("XMP", lambda: _xmp_properties(im), errors, {})
    xmp = _guarded("XMP", lambda: _xmp_fields(properties), errors, {})
    iptc = _guarded("IPTC", lambda: _iptc_fields(im), errors, {})
    tags = _guarded("EXIF", im.getexif, errors, None)
    exif = _guarded("EXIF", lambda: _exif_fields(tags), errors, {}) if tags else {}
    descriptive, native = (xmp, iptc, exif), (exif, xmp)
    position = (_guarded("EXIF GPS", lambda: _exif_position(tags.get_ifd(ExifTags.IFD.GPSInfo)), errors, None)
                if tags else None) or _guarded("XMP GPS", lambda: _xmp_position(properties), errors, None)

    def first(name: str, sources: tuple[dict, ...]) -> str:
        return next((source[name] for source in sources if source.get(name)), "")

    keywords = list(dict.fromkeys(k for source in descriptive for k in source.get("keywords", ()) if k))
    return EmbeddedMetadata(
        title=first("title", descriptive), caption=first("caption", descriptive), keywords=keywords[:MAX_KEYWORDS],
        creator=first("creator", descriptive), copyright=first("copyright", descriptive),
        camera_make=first("camera_make", native), camera_model=first("camera_model", native),
        latitude=position[0] if position else None, longitude=position[1] if position else None,
        errors=list(dict.fromkeys(errors)),
    )


def _guarded(block: str, read: Callable[[], Any], errors: list[str], default: Any) -> Any:
    try:
        return read()
    except Exception as exc:  # a damaged block costs its fields, never the photo
        detail = str(exc).strip() or "no detail"
        errors.append(f"{block}: could not be read ({type(exc).__name__}: {detail})"[:1000])
        return default


def _text(value: object, limit: int = MAX_TEXT, keep_lines: bool = False) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return ""
    value = _CONTROL.sub(" ", unicodedata.normalize("NFC", value))
    if not keep_lines:
        value = " ".join(value.split())
    return value.strip()[:limit]


# --- XMP -----------------------------------------------------------------------------------

def _xmp_properties(im: Image.Image) -> dict[str, Any]:
    """The properties of the XMP packet's rdf:Description elements, keyed by their full
    `{namespace}name` (namespaces kept: dc:title and another schema's `title` are not one)."""
    tree = im.getxmp(strip_namespaces=False)  # {} when the image has no XMP
    if not tree:
        return {}
    root = next(iter(tree.values()))  # x:xmpmeta, or rdf:RDF itself in some writers
    rdf = root.get(f"{_RDF}RDF", root) if isinstance(root, dict) else {}
    properties: dict[str, Any] = {}
    for description in _as_list(rdf.get(f"{_RDF}Description") if isinstance(rdf, dict) else None):
        if isinstance(description, dict):
            for key, value in description.items():
                properties.setdefault(key, value)
    return properties


def _xmp_fields(properties: dict[str, Any]) -> dict:
    return {
        "title": _text(_xmp_alternative(properties.get(f"{_DC}title"))),
        "caption": _text(_xmp_alternative(properties.get(f"{_DC}description")), MAX_CAPTION, keep_lines=True),
        "keywords": [normalise_keyword(k) for k in _xmp_items(properties.get(f"{_DC}subject"))],
        "creator": _text("; ".join(_xmp_items(properties.get(f"{_DC}creator")))),
        "copyright": _text(_xmp_alternative(properties.get(f"{_DC}rights"))),
        "camera_make": _text(_xmp_alternative(properties.get(f"{_TIFF_NS}Make"))),
        "camera_model": _text(_xmp_alternative(properties.get(f"{_TIFF_NS}Model"))),
    }


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _xmp_entries(value: object) -> list:
    """The rdf:li entries of an XMP array (Bag, Seq, Alt), or the value itself when simple."""
    if isinstance(value, dict):
        for container in ("Alt", "Bag", "Seq"):
            inner = value.get(f"{_RDF}{container}")
            if inner is not None:
                return _as_list(inner.get(f"{_RDF}li")) if isinstance(inner, dict) else []
    return _as_list(value)


def _xmp_entry_text(entry: object) -> str:
    if isinstance(entry, dict):  # an entry with attributes (xml:lang) holds its text under "text"
        entry = entry.get("text")
    return entry if isinstance(entry, str) else ""


def _xmp_items(value: object) -> list[str]:
    return [text for text in (_xmp_entry_text(e).strip() for e in _xmp_entries(value)) if text]


def _xmp_alternative(value: object) -> str:
    """A language alternative (dc:title, dc:description, dc:rights): the x-default entry, else
    the first."""
    entries = _xmp_entries(value)
    default = [e for e in entries if isinstance(e, dict) and e.get(_XML_LANG) == "x-default"]
    for entry in default + entries:
        if _xmp_entry_text(entry).strip():
            return _xmp_entry_text(entry)
    return ""


def _xmp_position(properties: dict[str, Any]) -> tuple[float, float] | None:
    """XMP's GPS coordinates are text, "DDD,MM.mmk" or "DDD,MM,SSk" (k: N, S, E or W)."""
    latitude, longitude = properties.get(f"{_EXIF_NS}GPSLatitude"), properties.get(f"{_EXIF_NS}GPSLongitude")
    if not isinstance(latitude, str) or not isinstance(longitude, str):
        return None
    return _checked_position(_xmp_coordinate(latitude, "NS"), _xmp_coordinate(longitude, "EW"))


def _xmp_coordinate(text: str, directions: str) -> float:
    text = text.strip().upper()
    if not text or text[-1] not in directions:
        raise ValueError(f"GPS coordinate {text!r} does not end in {' or '.join(directions)}")
    parts = [float(part) for part in text[:-1].split(",")]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"GPS coordinate {text!r} is not degrees, minutes and seconds")
    degrees = sum(part / 60 ** i for i, part in enumerate(parts))
    return -degrees if text[-1] == directions[1] else degrees


def _checked_position(latitude: float, longitude: float) -> tuple[float, float]:
    if not (math.isfinite(latitude) and math.isfinite(longitude) and abs(latitude) <= 90 and abs(longitude) <= 180):
        raise ValueError(f"GPS position {latitude:.7g}, {longitude:.7g} is outside the globe")
    return round(latitude, 7), round(longitude, 7)


# --- IPTC ----------------------------------------------------------------------------------

def _iptc_fields(im: Image.Image) -> dict:
    if im.format not in ("JPEG", "MPO", "TIFF"):
        return {}  # the formats getiptcinfo reads; the others carry XMP instead
    info = IptcImagePlugin.getiptcinfo(im)
    if not info:
        return {}
    utf8 = _iptc_values(info.get(_IPTC_CHARSET))[:1] == [_IPTC_UTF8]

    def texts(dataset: tuple[int, int]) -> list[str]:
        return [_iptc_text(raw, utf8) for raw in _iptc_values(info.get(dataset))]

    return {
        "title": _text(" ".join(texts(_IPTC_TITLE))),
        "caption": _text("\n".join(texts(_IPTC_CAPTION)), MAX_CAPTION, keep_lines=True),
        "keywords": [normalise_keyword(k) for k in texts(_IPTC_KEYWORDS)],
        "creator": _text("; ".join(t for t in texts(_IPTC_CREATOR) if t.strip())),
        "copyright": _text(" ".join(texts(_IPTC_COPYRIGHT))),
    }


def _iptc_values(value: object) -> list[bytes]:
    # getiptcinfo gives a repeated dataset as a list, a single one as bytes.
    return [v for v in _as_list(value) if isinstance(v, bytes)]


def _iptc_text(raw: bytes, utf8: bool) -> str:
    """IIM text is in the character set record 1 names (ESC % G: UTF-8), else in whatever the
    writing software used: UTF-8 when it decodes as such, else Windows-1252 (Latin-1's superset,
    what older Windows and Mac software wrote)."""
    if utf8:
        return raw.decode("utf-8", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


# --- EXIF ----------------------------------------------------------------------------------

def _exif_fields(exif: Image.Exif) -> dict:
    keywords = _xp_text(exif.get(_XP_KEYWORDS)).split(";")
    return {
        "title": _text(_xp_text(exif.get(_XP_TITLE))),
        "caption": _text(exif.get(ExifTags.Base.ImageDescription), MAX_CAPTION, keep_lines=True),
        "keywords": [normalise_keyword(k) for k in keywords],
        "creator": _text(exif.get(ExifTags.Base.Artist)),
        # Photographer and editor copyright, separated by a NUL (EXIF 2.3, 0x8298).
        "copyright": _text("; ".join(_nul_separated(exif.get(ExifTags.Base.Copyright)))),
        "camera_make": _text(exif.get(ExifTags.Base.Make)),
        "camera_model": _text(exif.get(ExifTags.Base.Model)),
    }


def _xp_text(value: object) -> str:
    if isinstance(value, tuple):  # some files give the XP tags as a tuple of byte values
        value = bytes(value)
    return value.decode("utf-16-le", errors="replace").rstrip("\x00") if isinstance(value, bytes) else ""


def _nul_separated(value: object) -> Iterable[str]:
    return [part.strip() for part in value.split("\x00") if part.strip()] if isinstance(value, str) else []


def _exif_position(gps: dict) -> tuple[float, float] | None:
    latitude, longitude = gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLongitude)
    if latitude is None or longitude is None:
        return None
    if gps.get(ExifTags.GPS.GPSStatus) == "V":  # "void": the receiver had no fix
        return None

    def degrees(parts, reference: object, negative: str) -> float:
        parts = tuple(parts) if isinstance(parts, (tuple, list)) else (parts,)
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"GPS coordinate {parts!r} is not degrees, minutes and seconds")
        value = sum(float(part) / 60 ** i for i, part in enumerate(parts))
        return -value if isinstance(reference, str) and reference.strip().upper() == negative else value

    return _checked_position(degrees(latitude, gps.get(ExifTags.GPS.GPSLatitudeRef), "S"),
                             degrees(longitude, gps.get(ExifTags.GPS.GPSLongitudeRef), "W"))
