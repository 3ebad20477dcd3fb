"""Photos out: a list of photos as a CSV file, or as a ZIP of their originals, both streamed.

The caller (a search's matches, an album: `retrieval`) decides which photos, applying the
viewer's access; this module only writes them. Both downloads are generated while they are
sent (Django's StreamingHttpResponse), never assembled first, so an export holds one 1 MiB
read buffer and, for the ZIP, its central directory (~0.6 KB a photo, written last) in memory,
whatever the photos weigh, and writes nothing to disk (bench/export.py: 10,000 photos of 10 MB,
100 GB streamed, in 10 MB more than an empty export):

* the CSV, one row per photo as its row arrives from the database (CSV_COLUMNS);
* the ZIP, by zipstream-ng: each original is read in 1 MiB chunks into one stored
  (uncompressed: photos do not compress, and deflating 100 GB would only burn CPU) member whose
  size and CRC follow it in a data descriptor, then the central directory at the end. Members
  are named `<photo id>-<original name>` (ZIP_NAME_HELP): unique, flat, and safe to unpack.
  A photo whose file is gone by the time its turn comes (deleted meanwhile) is left out and
  named in a last member, MISSING.txt. On request each original is followed by an XMP sidecar
  (`<id>-<name>.xmp`, Adobe's naming) with the photo's embedded fields and extra keywords (an
  album's name), for photo managers that read keywords from sidecars.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from xml.etree import ElementTree

from django.core.exceptions import SuspiciousFileOperation
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import get_valid_filename
from zipstream import ZIP_STORED, ZipStream

from .models import Asset

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("csv", "zip")
CHUNK_BYTES = 1024 * 1024
NAME_STEM_MAX = 120
MISSING_MEMBER = "MISSING.txt"

# (column, meaning): the README's table of the CSV's columns is this one.
CSV_COLUMN_HELP = (
    ("asset_id", "the photo's id (`GET /api/assets/{id}/`)"),
    ("library_id", "its library's id"),
    ("library", "its library's name"),
    ("original_name", "the name it was uploaded or imported under (with the folders import_folder saw)"),
    ("sha256", "SHA-256 of the original's bytes"),
    ("taken_at", "capture time, ISO 8601 with the offset, in the site's time zone; empty when unknown"),
    ("score", "its score for the search (u·e), 6 decimals"),
    ("text_score", "the text part of the score (search exports; empty for albums)"),
    ("image_score", "the image (proxy) part of the score (search exports; empty for albums)"),
    ("keywords", "its embedded keywords (normalised), separated by `; `"),
    ("zip_name", "the name of its original inside the ZIP export of the same photos"),
)
CSV_COLUMNS = tuple(name for name, _ in CSV_COLUMN_HELP)
ZIP_NAME_HELP = ("`<photo id>-<original file name>`, the name made safe (letters, digits, `-`, `_`, `.`; no "
                 "folders) and given the extension of the stored format")

# A spreadsheet runs a cell that starts with one of these as a formula ("CSV injection"): text
# that came from uploaders (names, keywords) gets a leading apostrophe there, as OWASP advises.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True)
class ExportRow:
    """One photo of an export, with its scores where the list has them. `asset.library` is
    read: select it with the photo."""

    asset: Asset
    score: float | None = None
    text_score: float | None = None
    image_score: float | None = None


def zip_member_name(asset: Asset) -> str:
    """`<id>-<safe original name>.<stored suffix>`: the id makes it unique within an export,
    the rest keeps it recognisable; no folder, no `..`, nothing a file system refuses."""
    suffix = PurePosixPath(asset.file.name).suffix.lower()
    stem = PurePosixPath(_SEPARATORS.split(asset.original_name or "")[-1]).stem[:NAME_STEM_MAX]
    try:
        stem = get_valid_filename(stem)
    except SuspiciousFileOperation:  # nothing usable left ("", ".", "..")
        stem = ""
    return f"{asset.pk}-{stem}{suffix}" if stem else f"{asset.pk}{suffix}"


def csv_lines(rows: Iterable[ExportRow]) -> Iterator[str]:
    """The CSV file, a line at a time: the header (CSV_COLUMNS), then one line per row."""
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    for row in rows:
        yield writer.writerow(_cells(row))


def zip_chunks(assets: Iterable[Asset], sidecar_keywords: Sequence[str] | None = None) -> Iterator[bytes]:
    """The ZIP of the photos' originals, generated while it is read; with `sidecar_keywords`
    (a list, perhaps empty), each original is followed by its XMP sidecar."""
    archive = ZipStream(compress_type=ZIP_STORED)
    missing: list[str] = []
    seen: set[int] = set()
    for asset in assets:
        if asset.pk in seen:
            continue
        seen.add(asset.pk)
        name = zip_member_name(asset)
        try:
            # Opened before the member is announced: a photo deleted from here on still
            # streams from its open file, one deleted before is left out cleanly.
            original = open(asset.file.path, "rb")
        except OSError as exc:
            logger.warning("export: photo %s left out, its file cannot be read: %s", asset.pk, exc)
            missing.append(f"{name}: {exc.strerror or exc}")
            continue
        archive.add(_read_closing(original), name, size=os.fstat(original.fileno()).st_size)
        if sidecar_keywords is not None:
            archive.add(xmp_sidecar(asset, sidecar_keywords), f"{PurePosixPath(name).stem}.xmp")
        yield from archive.all_files()
    if missing:
        archive.add("Photos left out: their files could not be read (deleted during the export?)\n"
                    + "".join(f"{line}\n" for line in missing), MISSING_MEMBER)
        yield from archive.all_files()
    yield from archive.footer()


def export_response(rows: Iterable[ExportRow], kind: str, name: str,
                    sidecar_keywords: Sequence[str] | None = None) -> StreamingHttpResponse:
    """The download of `rows` as `kind` (EXPORT_FORMATS), saved as `<name>.<kind>`; a ZIP with
    XMP sidecars when `sidecar_keywords` is a list."""
    if kind == "csv":
        body, content_type = csv_lines(rows), "text/csv; charset=utf-8"
    elif kind == "zip":
        body, content_type = zip_chunks((row.asset for row in rows), sidecar_keywords), "application/zip"
    else:
        raise ValueError(f"no export as {kind!r}; one of {EXPORT_FORMATS}")
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=f"{name}.{kind}")
    response["Cache-Control"] = "private, no-store"  # the viewer's access now, not a cached one
    response["X-Accel-Buffering"] = "no"  # nginx: pass the stream on, do not spool it to disk
    return response


_X, _RDF = "adobe:ns:meta/", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC, _XML_LANG = "http://purl.org/dc/elements/1.1/", "{http://www.w3.org/XML/1998/namespace}lang"
for _prefix, _uri in (("x", _X), ("rdf", _RDF), ("dc", _DC)):
    ElementTree.register_namespace(_prefix, _uri)


def xmp_sidecar(asset: Asset, extra_keywords: Sequence[str] = ()) -> bytes:
    """An XMP packet for `asset`: dc:title, dc:description, dc:creator and dc:rights as its
    embedded metadata has them, and dc:subject its keywords plus `extra_keywords`."""
    root = ElementTree.Element(f"{{{_X}}}xmpmeta")
    description = ElementTree.SubElement(ElementTree.SubElement(root, f"{{{_RDF}}}RDF"), f"{{{_RDF}}}Description",
                                         {f"{{{_RDF}}}about": ""})

    def array(name: str, kind: str, items: Iterable[str], attributes: dict | None = None) -> None:
        items = [item for item in items if item]
        if items:
            container = ElementTree.SubElement(ElementTree.SubElement(description, f"{{{_DC}}}{name}"), f"{{{_RDF}}}{kind}")
            for item in items:
                ElementTree.SubElement(container, f"{{{_RDF}}}li", attributes or {}).text = item

    default_language = {_XML_LANG: "x-default"}
    array("title", "Alt", [asset.title], default_language)
    array("description", "Alt", [asset.caption], default_language)
    array("creator", "Seq", [asset.creator])
    array("rights", "Alt", [asset.copyright], default_language)
    array("subject", "Bag", dict.fromkeys([*asset.keywords, *extra_keywords]))
    packet = ElementTree.tostring(root, encoding="unicode")
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{packet}\n<?xpacket end="w"?>'.encode()


def _cells(row: ExportRow) -> list[str]:
    asset = row.asset
    taken = timezone.localtime(asset.taken_at).isoformat() if asset.taken_at else ""
    return [
        str(asset.pk), str(asset.library_id), _text(asset.library.name), _text(asset.original_name), asset.sha256,
        taken, _number(row.score), _number(row.text_score), _number(row.image_score),
        _text("; ".join(asset.keywords)), zip_member_name(asset),
    ]


def _text(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _read_closing(handle) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


class _Line:
    """What csv.writer writes into: it hands each line back instead of keeping it."""

    def write(self, line: str) -> str:
        return line
