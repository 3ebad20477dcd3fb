"""One partial expression HNSW index per embedding space (ARCHITECTURE.md, data model).

The shared `halfvec` column has no fixed dimension, and pgvector can only index a typed
expression, so each space's index casts to `halfvec(D)` and is limited to the space's rows.
A query must use the same expression and predicate for the planner to pick the index.
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
    """Create the space's HNSW index if it does not exist (idempotent, safe to call twice)."""
    with connection.cursor() as cursor:
        # Django's foreign keys are DEFERRABLE: rows written earlier in the same transaction
        # leave pending trigger events, which CREATE INDEX refuses. Check them now instead.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            f'CREATE INDEX IF NOT EXISTS "{index_name(space)}" ON "{TABLE}" '
            f"USING hnsw ({vector_expression(space)} halfvec_ip_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
            f"WHERE space_id = {int(space.pk)}"
        )


def drop_space_index(space: EmbeddingSpace) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX IF EXISTS "{index_name(space)}"')
