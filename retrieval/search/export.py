"""The photos of a search's export (assets.export writes them as CSV or a ZIP of originals).

They are read through `results.matching_results`, the one reader of stored results, so an
export holds exactly what the results page shows the viewer now: the matches (rank up to the
match count), by rank, of the libraries the viewer may see at the moment of the request.
"""
from __future__ import annotations

from collections.abc import Iterator

from assets.export import ExportRow

from ..models import Search
from .results import matching_results

# Rows fetched from the database at a time while a download streams.
EXPORT_CHUNK_ROWS = 500


def search_export_rows(search: Search, viewer) -> Iterator[ExportRow]:
    results = matching_results(search, viewer, matches_only=True).select_related("asset__library")
    for result in results.iterator(chunk_size=EXPORT_CHUNK_ROWS):
        yield ExportRow(result.asset, result.score, result.text_score, result.image_score)


def search_export_name(search: Search) -> str:
    return f"search-{search.pk}-matches"
