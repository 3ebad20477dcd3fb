"""The photos of an album's export (assets.export writes them as CSV or a ZIP of originals).

They are read through `albums.album_photos`, so an export holds exactly what the album page
shows the viewer now (pinned and automatic photos, never removed ones, of the libraries the
viewer may see at the moment of the request), by capture time. The ZIP may carry an XMP
sidecar beside each photo with the album's name as a keyword.
"""
from __future__ import annotations

from collections.abc import Iterator

from django.utils.text import slugify

from assets.export import ExportRow

from ..models import Album
from ..search.export import EXPORT_CHUNK_ROWS
from .albums import album_photos


def album_export_rows(album: Album, viewer) -> Iterator[ExportRow]:
    photos = album_photos(album, viewer).select_related("asset__library")
    for photo in photos.iterator(chunk_size=EXPORT_CHUNK_ROWS):
        yield ExportRow(photo.asset, photo.score)


def album_sidecar_keywords(album: Album) -> list[str]:
    """What the XMP sidecars of an album's ZIP add to each photo's keywords: the album's name,
    so a photo manager that reads the sidecars files the photos under it."""
    return [album.name]


def album_export_name(album: Album) -> str:
    return f"album-{album.pk}-{slugify(album.name)[:60]}".rstrip("-")
