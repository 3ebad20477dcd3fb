"""A search's stored results: written once when it ends, read page by page.

Reading applies the viewer's access *now*: a photo of a library the viewer may no longer see is
not shown, whatever was true when the search ran (`scope.visible_library_ids`).

Writing: one `SearchRanking` row (asset ids and float32 scores as arrays, in rank order) by one
binary COPY built by numpy, in a transaction that commits without waiting for the disk
(`synchronous_commit = off`): ~1 ms, where a thousand result rows cost ~16 ms and a flushed
commit alone ~4-10 ms on a small, busy machine (bench/search.py). Results are derived data: a
database crash in the instant after the commit loses the search's results *and* its "done"
state together (one transaction), so the search is swept and run again, never half stored.

Before they are written, the ranked photos are checked against the scope in the database
(`out_of_scope`): a worker's in-memory copy that missed a change costs a re-rank, never a leak.
The check reads the change feed first (`ranking.feed`): a photo none of whose rows changed
since the snapshot the ranking read (`Ranking.as_of`) is as it was then, in the scope. Only the
photos the feed names, if any, are looked up (a thousand random photos looked up cost ~6-9 ms
here, the feed ~0.5 ms). A scope narrowed by a query on the photos (filters on their metadata,
which the feed does not follow) is looked up whole.

Reading: through `SearchResult` (a view that unnests the arrays), by rank, or only the matches
(rank <= match count) by rank or by capture or upload time; pages never overlap or skip a
result, since every order ends in a key unique per search.
"""
from __future__ import annotations

import struct

import numpy as np
from django.db import connection
from django.db.models import F, QuerySet

from assets.models import Asset

from .. import binary_copy
from ..models import AssetEmbedding, EmbeddingSpace, Search, SearchRanking, SearchResult
from ..vector_params import binary_cursor
from .ranking import Ranking, Scope
from .ranking.feed import changed_since
from .scope import visible_library_ids

# Orders of a list of photos by date; each ends in a unique key.
SORTS = {"taken": (F("asset__taken_at").asc(nulls_last=True), "asset__created_at", "asset_id"),
         "uploaded": ("asset__created_at", "asset_id")}

# Element type oids of the binary array format.
INT8_OID, FLOAT4_OID = 20, 700


def _binary_array(values: np.ndarray, element: str, oid: int) -> bytes:
    """A one-dimensional array in Postgres' binary format: (ndim, has nulls, element oid, length,
    lower bound), then a (length, value) pair per element."""
    items = np.zeros(len(values), dtype=[("length", ">i4"), ("value", element)])
    items["length"], items["value"] = np.dtype(element).itemsize, values
    return struct.pack(">iiiii", 1, 0, oid, len(values), 1) + items.tobytes()


def in_scope(space: EmbeddingSpace, scope: Scope, asset_ids: list[int]) -> set[int]:
    """Which of these photos are in the scope now, with a vector in the space (one query)."""
    if not asset_ids:
        return set()
    condition, params = scope.where("a")
    sql = (f'SELECT a.id FROM "{Asset._meta.db_table}" a JOIN "{AssetEmbedding._meta.db_table}" e '
           f"ON e.asset_id = a.id AND e.space_id = {int(space.pk)} WHERE a.id = ANY(%(ids)s) AND {condition}")
    with binary_cursor() as cursor:
        cursor.execute(sql, {**params, "ids": list(asset_ids)}, binary=True)
        return {row[0] for row in cursor.fetchall()}


def out_of_scope(space: EmbeddingSpace, scope: Scope, ranking: Ranking) -> set[int]:
    """The ranked photos that are not in the scope now (see the module docstring)."""
    ranked = ranking.asset_ids.tolist()
    if scope.photos is not None or ranking.as_of is None:
        suspects = ranked
    else:
        suspects = list(changed_since(space, ranking.as_of, ranked))
    return set(suspects) - in_scope(space, scope, suspects) if suspects else set()


def store_results(search: Search, asset_ids: np.ndarray, scores: np.ndarray, text_scores: np.ndarray,
                  image_scores: np.ndarray) -> None:
    """Write the ranked photos (best first) and their float32 scores as the search's results,
    inside the caller's transaction, and let that transaction commit without waiting for the disk."""
    fields = [
        struct.pack(">q", search.pk),
        _binary_array(np.asarray(asset_ids, dtype=np.int64), ">i8", INT8_OID),
        *(_binary_array(np.asarray(values, dtype=np.float32), ">f4", FLOAT4_OID)
          for values in (scores, text_scores, image_scores)),
    ]
    payload = struct.pack(">h", len(fields)) + b"".join(struct.pack(">i", len(f)) + f for f in fields)
    columns = "search_id, asset_ids, scores, text_scores, image_scores"
    with connection.cursor() as cursor:
        # An unfinished run's results, if any, go; one round trip for both statements.
        cursor.execute(f"SET LOCAL synchronous_commit = off; "
                       f'DELETE FROM "{SearchRanking._meta.db_table}" WHERE search_id = {int(search.pk)}')
        with cursor.cursor.copy(f'COPY "{SearchRanking._meta.db_table}" ({columns}) FROM STDIN WITH (FORMAT binary)') as copy:
            copy.write(binary_copy.HEADER + payload + binary_copy.TRAILER)


def matching_results(search: Search, viewer, matches_only: bool = False, sort: str = "") -> QuerySet[SearchResult]:
    """A search's stored results that `viewer` may see now: all by rank, or only its matches
    (rank <= match count), by rank or by capture (`taken`) / upload (`uploaded`) time."""
    rows = search.results.select_related("asset").filter(asset__library_id__in=visible_library_ids(viewer))
    if not matches_only:
        return rows.order_by("rank")
    rows = rows.filter(rank__lte=search.match_count or 0)
    return rows.order_by(*SORTS[sort], "rank") if sort in SORTS else rows.order_by("rank")


def visible_photos(photos: QuerySet, viewer) -> QuerySet:
    """The photos (a search's examples, say) of libraries `viewer` may see now."""
    return photos.filter(library_id__in=visible_library_ids(viewer)).order_by("pk")
