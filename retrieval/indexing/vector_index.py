"""One partial expression HNSW index per embedding space (ARCHITECTURE.md, data model).

The shared `halfvec` column has no fixed dimension, and pgvector can only index a typed
expression, so each space's index casts to `halfvec(D)` and is limited to the space's rows.
A query must use the same expression and predicate for the planner to pick the index.

A space's index is built once its first backfill is done (the indexing task, before search
switches to the space), not when the space is made: inserting a vector into an HNSW graph
costs about a hundred times writing it (`bench/ingest.py --claim-store`: ~12,000 vectors/s
claimed and stored without the graph, 100-250/s into a graph of 20,000 on a 2-core CPU), so a
backfill that kept the graph up row by row would be held to that rate whatever the GPU does,
while one build over the finished rows is a bulk pass (20,000 vectors in 12-17 s there).
From then on new photos' vectors go into the graph as they come. Until it exists, searches of
the space rank exactly (a scan: correct, slower on large scopes).
"""
from __future__ import annotations

from django.db import connection

from ..models import AssetEmbedding, EmbeddingSpace

TABLE = AssetEmbedding._meta.db_table

# HNSW build parameters, measured with bench/search.py (100k × 896 clustered vectors).
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 64


def index_name(space: EmbeddingSpace) -> str:
    return f"{TABLE}_space_{space.pk}_hnsw"


def vector_expression(space: EmbeddingSpace) -> str:
    """The SQL expression the index covers; rank with `<#>` on exactly this expression."""
    return f"(vector::halfvec({int(space.dim)}))"


def ensure_space_index(space: EmbeddingSpace, m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION) -> None:
    """Create the space's HNSW index if it does not exist (idempotent, safe to call twice).

    Outside a transaction it is built CONCURRENTLY, so vectors keep being written while it is
    built (a plain build locks the table against writes for its whole duration); an invalid
    index left by an interrupted concurrent build is dropped and built again. Inside a
    transaction, where Postgres allows no concurrent build, it is built plainly.
    """
    definition = (f'"{index_name(space)}" ON "{TABLE}" USING hnsw ({vector_expression(space)} halfvec_ip_ops) '
                  f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) WHERE space_id = {int(space.pk)}")
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            # Django's foreign keys are DEFERRABLE: rows written earlier in the same transaction
            # leave pending trigger events, which CREATE INDEX refuses. Check them now instead.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {definition}")
            return
        cursor.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                       "WHERE c.relname = %s AND pg_table_is_visible(c.oid)", [index_name(space)])
        row = cursor.fetchone()
        if row is not None and row[0]:
            return
        if row is not None:
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index_name(space)}"')
        cursor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {definition}")


def drop_space_index(space: EmbeddingSpace) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX IF EXISTS "{index_name(space)}"')
