"""The change feed that keeps a worker's in-memory copy of a space's vectors current.

Postgres is the only source of truth. Triggers (migration 0007) write a row to
`retrieval_rankingchange` (space, asset, the writing transaction's id) whenever what a copy
mirrors changes, whoever writes it (the ORM, a binary COPY, a migration, psql):

* a vector inserted, updated or deleted in `retrieval_assetembedding` (statement-level
  triggers with transition tables: one insert per statement, cheap for bulk writes; deleting a
  photo, a library or a space deletes its vectors, and logs them);
* a photo moved to another library, or marked failed or no longer failed, in `assets_asset`
  (a row trigger whose WHEN clause skips every other update at no cost).

A TRUNCATE of those tables or of the log itself advances the sequence `retrieval_ranking_epoch`.

A copy reads the feed before every ranking with one indexed query, `changes_since`: the rows of
its space whose transaction id is at or above its watermark, each joined to the photo's
current state, plus a header with the new watermark and the database's identity. The watermark
is the snapshot's xmin (every transaction below it has ended), so a change committed late by a
transaction that started early is never skipped; rows read twice are applied twice, which is
harmless (each carries the photo's current state). A copy that cannot prove it is current
reloads: the identity changed (the server restarted, the database or a table was re-created, a
table was truncated, the space was dropped or re-created), the watermark went backwards (a
restore), or the log was pruned past its watermark (`prune_changes`, run by the stale-work
sweep, deletes rows older than CLETIR_RANK_FEED_KEEP_SECONDS and moves
`retrieval_ranking_pruned` past the highest transaction id it deleted).

The same log tells the check before a search's results are stored which ranked photos changed
since the snapshot the ranking read (`changed_since`).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.db import connection

from assets.models import Asset

from ... import binary_copy
from ...models import AssetEmbedding, EmbeddingSpace
from ...vector_params import binary_cursor

CHANGES = "retrieval_rankingchange"
EPOCH_SEQUENCE = "retrieval_ranking_epoch"
PRUNED_SEQUENCE = "retrieval_ranking_pruned"


@dataclass(frozen=True)
class FeedHeader:
    watermark: int  # xmin of the snapshot the feed was read in
    identity: tuple  # what must not change for the copy to stay valid (see the module docstring)
    pruned_below: int  # change rows below this transaction id may be gone


@dataclass(frozen=True)
class Changes:
    """The current state of every photo the feed named: its row in the space, or none."""

    header: FeedHeader
    asset_ids: np.ndarray  # int64
    library_ids: np.ndarray  # int64 (-1 where the photo is gone)
    live: np.ndarray  # bool: has a vector in the space and is not failed
    vectors: np.ndarray  # (n, dim) float16; rows without a vector are zero


def _identity_sql(space_id: int) -> str:
    embeddings, assets = AssetEmbedding._meta.db_table, Asset._meta.db_table
    spaces = EmbeddingSpace._meta.db_table
    return f"""json_build_array(
        pg_postmaster_start_time()::text,
        (SELECT oid FROM pg_database WHERE datname = current_database()),
        '"{embeddings}"'::regclass::oid, '"{assets}"'::regclass::oid, '{CHANGES}'::regclass::oid,
        (SELECT last_value::text || is_called::text FROM {EPOCH_SEQUENCE}),
        (SELECT json_build_array(fingerprint, created_at::text, vlm_dim, vision_dim) FROM "{spaces}"
         WHERE id = {int(space_id)})
    )::text"""


def _header_columns(space_id: int) -> str:
    return (f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            f"(SELECT last_value FROM {PRUNED_SEQUENCE}), {_identity_sql(space_id)}")


def _parse_header(watermark, pruned, identity) -> FeedHeader:
    return FeedHeader(watermark=int(watermark), identity=_frozen(json.loads(identity)), pruned_below=int(pruned))


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def header(space: EmbeddingSpace) -> FeedHeader:
    """The feed's header alone (taken before a load: the load then reflects at least it)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_header_columns(space.pk)}")
        return _parse_header(*cursor.fetchone())


def changes_since(space: EmbeddingSpace, watermark: int) -> Changes:
    """Every photo of `space` changed by a transaction at or above `watermark`, in its current
    state, and the feed's header, read in one statement (one snapshot)."""
    embeddings, assets = AssetEmbedding._meta.db_table, Asset._meta.db_table
    space_id = int(space.pk)
    sql = f"""
        WITH changed AS (
            SELECT DISTINCT c.asset_id FROM {CHANGES} c
            WHERE c.space_id = {space_id} AND c.xid >= %(since)s::text::xid8
        )
        SELECT NULL::bigint, NULL::bigint, NULL::boolean, NULL::bytea, {_header_columns(space_id)}
        UNION ALL
        SELECT f.asset_id, a.library_id, e.id IS NOT NULL AND a.status IS DISTINCT FROM %(failed)s,
               halfvec_send(e.vector), NULL, NULL, NULL
        FROM changed f
        LEFT JOIN "{embeddings}" e ON e.asset_id = f.asset_id AND e.space_id = {space_id}
        LEFT JOIN "{assets}" a ON a.id = f.asset_id
    """
    with binary_cursor() as cursor:
        cursor.execute(sql, {"since": str(int(watermark)), "failed": Asset.Status.FAILED}, binary=True)
        rows = cursor.fetchall()
    head = _parse_header(*next(row for row in rows if row[0] is None)[4:])
    body = [row for row in rows if row[0] is not None]
    dim = space.dim
    vectors = np.zeros((len(body), dim), dtype=np.float16)
    for i, row in enumerate(body):
        if row[3] is not None:
            vectors[i] = _halfvec_values(bytes(row[3]), dim)
    return Changes(
        header=head,
        asset_ids=np.array([r[0] for r in body], dtype=np.int64),
        library_ids=np.array([-1 if r[1] is None else r[1] for r in body], dtype=np.int64),
        live=np.array([bool(r[2]) for r in body], dtype=bool),
        vectors=vectors,
    )


def _halfvec_values(payload: bytes, dim: int) -> np.ndarray:
    """The values of pgvector's binary halfvec (int16 dim, int16 unused, big-endian float16s)."""
    got = int.from_bytes(payload[:2], "big", signed=True)
    if got != dim:
        raise ValueError(f"a vector of {got} dimensions in a space of {dim}")
    return np.frombuffer(payload, dtype=">f2", offset=4, count=dim).astype(np.float16)


def changed_since(space: EmbeddingSpace, watermark: int, asset_ids: list[int]) -> set[int]:
    """Which of these photos the feed names at or above `watermark` (all of them when the log
    was pruned past it): those whose state may differ from what a snapshot at `watermark` saw."""
    with binary_cursor() as cursor:
        cursor.execute(f"""
            SELECT DISTINCT c.asset_id FROM {CHANGES} c
            WHERE c.space_id = {int(space.pk)} AND c.xid >= %(since)s::text::xid8 AND c.asset_id = ANY(%(ids)s)
            UNION ALL
            SELECT -1 FROM {PRUNED_SEQUENCE} WHERE last_value > %(since)s::bigint
        """, {"since": str(int(watermark)), "ids": list(asset_ids)}, binary=True)
        named = {row[0] for row in cursor.fetchall()}
    return set(asset_ids) if -1 in named else named


def count_rows(space: EmbeddingSpace) -> int:
    """Vectors in the space (the size a copy will have)."""
    return AssetEmbedding.objects.filter(space=space).count()


# Rows of a load, as the binary COPY sends them (see `load_rows`).
def _load_row_type(dim: int) -> np.dtype:
    halfvec = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f2", (dim,))])
    return binary_copy.row_type([("asset", ">i8"), ("library", ">i8"), ("live", "?"), ("vector", halfvec)])


# Bytes handed to numpy at once while loading: large enough that the per-block cost vanishes,
# small enough to stay in the caches.
LOAD_BLOCK_BYTES = 8 << 20


def load_rows(space: EmbeddingSpace) -> Iterator[np.ndarray]:
    """Every vector of the space with its photo's library and state, in blocks of rows of
    `_load_row_type` (structured numpy arrays, big-endian), by one binary COPY: fixed-size
    rows that numpy reads without a Python call per row."""
    embeddings, assets = AssetEmbedding._meta.db_table, Asset._meta.db_table
    row = _load_row_type(space.dim)
    sql = f"""COPY (
        SELECT e.asset_id, a.library_id, a.status <> '{Asset.Status.FAILED}', e.vector
        FROM "{embeddings}" e JOIN "{assets}" a ON a.id = e.asset_id
        WHERE e.space_id = {int(space.pk)}
    ) TO STDOUT (FORMAT binary)"""
    connection.ensure_connection()
    pending, skipped_header = bytearray(), False
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for chunk in copy:
            pending += chunk
            if not skipped_header and len(pending) >= len(binary_copy.HEADER):
                if bytes(pending[:11]) != binary_copy.HEADER[:11]:
                    raise ValueError("not a binary COPY stream")
                extension = int.from_bytes(pending[15:19], "big")
                del pending[:19 + extension]
                skipped_header = True
            if skipped_header and len(pending) >= LOAD_BLOCK_BYTES:
                yield _take_rows(pending, row, space.dim)
    if skipped_header:
        block = _take_rows(pending, row, space.dim)
        if len(pending) != len(binary_copy.TRAILER):
            raise ValueError("the binary COPY stream ended in the middle of a row")
        if len(block):
            yield block


def _take_rows(pending: bytearray, row: np.dtype, dim: int) -> np.ndarray:
    """Whole rows from the front of `pending` (removed from it)."""
    count = len(pending) // row.itemsize  # the trailer (int16 -1) is shorter than a row
    block = np.frombuffer(bytes(pending[:count * row.itemsize]), dtype=row)
    del pending[:count * row.itemsize]
    if count and not (np.all(block["vector"]["dim"] == dim) and np.all(block["fields"] == 4)):
        raise ValueError(f"the space's vectors are not all {dim}-dimensional")
    return block


def prune_changes(keep_seconds: int) -> int:
    """Delete change rows older than `keep_seconds` and raise the pruned mark past them, so a
    copy whose watermark they could have moved reloads; returns the rows deleted.

    Only rows below the current snapshot's xmin go: every copy loaded from now on has a
    watermark at least that high, so a prune never makes a fresh copy reload (a transaction
    left open for hours holds the horizon back instead)."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            WITH gone AS (
                DELETE FROM {CHANGES}
                WHERE created_at < now() - make_interval(secs => %s) AND xid < pg_snapshot_xmin(pg_current_snapshot())
                RETURNING xid
            )
            SELECT count(*), max(xid::text::bigint) FROM gone
        """, [keep_seconds])
        deleted, highest = cursor.fetchone()
        if highest is not None:
            cursor.execute(f"SELECT setval('{PRUNED_SEQUENCE}', greatest(last_value, %s)) FROM {PRUNED_SEQUENCE}",
                           [int(highest) + 1])
    return int(deleted)
