"""Ranking photos of some libraries by one fused query vector: one pgvector query.

The fused score of METHOD.md step 5 is the inner product <u, e(x)> of the query vector
u = [(1-λ)t; λq] with the stored photo vector e(x) = [I(x); V(x)], so the whole ranking is one
`ORDER BY e <#> u LIMIT N` over the space's partial HNSW index (see `retrieval.indexing.vector_index`).

Three pgvector facts shape the query (ARCHITECTURE.md, "pgvector facts that bite"):

* `hnsw.ef_search` caps how many rows one graph search yields; it is raised to at least N
  (up to pgvector's maximum of 1000; beyond that the iterative scan supplies the rest).
* The library filter is applied after the graph scan, so without `hnsw.iterative_scan` a filter
  keeping 10% of the rows returns ~10% of N. With `relaxed_order` the scan keeps going until N
  rows passed the filter (or `hnsw.max_scan_tuples` were visited), but rows may come out
  slightly out of order: `rank` sorts the returned rows again (by their float32 scores).
* The iterative scan stops when its memory passes `work_mem × hnsw.scan_mem_multiplier`; for
  896-dim vectors the default (1 × 4 MB) ends a filtered scan after a few thousand tuples, so
  the multiplier is raised for the duration of the query.

A fourth fact: a filter that keeps few rows is where the graph is weakest (the scan has to go
deep, and its order gets rough: recall@100 ~0.86 for a 10% filter at 100k photos in
bench/search.py) and where an exact scan is cheapest (it reads only the filtered rows, through
the btree indexes on the library and the (asset, space) pair). So a ranking over at most
`CLETIR_EXACT_RANK_MAX_ROWS` candidate photos is exact, and only larger scopes use the graph.

The score parts shown to the user are computed by the same query against the float32 query
halves: text part (1-λ)<t, I(x)> and image part λ<q, V(x)>; the fused score is their sum in
float64, so `score == text_score + image_score` holds exactly. The final order
is that score, descending, ties broken by asset id, so pages of results never shuffle.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from assets.models import Asset

from ..indexing.vector_index import vector_expression
from ..models import AssetEmbedding, EmbeddingSpace
from ..vector_params import VectorParam, binary_cursor

# pgvector refuses an ef_search above 1000.
MAX_EF_SEARCH = 1000
# Memory of an iterative scan = work_mem × this multiplier (pgvector's default is 1): headroom so
# that memory, not CLETIR_HNSW_MAX_SCAN_TUPLES, never ends a filtered scan of 896-dim vectors
# early (bench/search.py: a 10% filter returns the full N at 100k photos).
SCAN_MEM_MULTIPLIER = 8


@dataclass(frozen=True)
class RankedRow:
    asset_id: int
    score: float
    text_score: float
    image_score: float


# A scope the statistics estimate at more than this many times the exact-scan limit (or less
# than the limit divided by it) is decided without counting; being on the wrong side would
# need statistics wrong by 3x, which autovacuum's re-analyze after 10% of a table changed
# prevents, and an under-estimate would only cost speed (an exact scan ranks any scope correctly).
ESTIMATE_MARGIN = 3


def candidate_count(library_ids: list[int], up_to: int) -> int:
    """How many photos a ranking over these libraries considers (failed ones never count),
    counted no further than `up_to` + 1: the decision needs no more. Counting even that far
    costs ~5 ms (20k rows), as much as the graph query it decides about, so a scope that the
    table statistics put far from `up_to` is not counted at all: its estimate is returned."""
    estimate = _estimated_photos(library_ids)
    if estimate is not None and (estimate > ESTIMATE_MARGIN * up_to or estimate * ESTIMATE_MARGIN < up_to):
        return estimate
    photos = Asset.objects.filter(library_id__in=library_ids).exclude(status=Asset.Status.FAILED).order_by()
    return photos[: up_to + 1].count()


def _estimated_photos(library_ids: list[int]) -> int | None:
    """Photos in these libraries by the statistics ANALYZE keeps (None before the first one):
    each library's share of the table, summed. The planner's own estimate for a list of values
    treats them as overlapping events (100k photos in 10 equal libraries: 65k)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.most_common_vals::text::bigint[], s.most_common_freqs, s.n_distinct, c.reltuples "
            "FROM pg_stats s, pg_class c WHERE c.oid = %s::regclass "
            "AND s.schemaname = current_schema() AND s.tablename = %s AND s.attname = 'library_id'",
            [Asset._meta.db_table, Asset._meta.db_table],
        )
        row = cursor.fetchone()
    if row is None or row[3] is None or row[3] < 0:
        return None
    common, freqs, n_distinct, rows = dict(zip(row[0] or [], row[1] or [])), row[1] or [], row[2], row[3]
    distinct = n_distinct if n_distinct > 0 else -n_distinct * rows  # negative: a fraction of the rows
    others = max(distinct - len(common), 1)
    rare_share = max(0.0, 1.0 - sum(freqs)) / others  # a library outside the most common values
    return int(round(rows * sum(common.get(pk, rare_share) for pk in set(library_ids))))


def choose_exact(library_ids: list[int]) -> bool:
    """Exact scan for small scopes (cheap there, and recall 1), the HNSW graph for large ones."""
    limit = settings.CLETIR_EXACT_RANK_MAX_ROWS
    return limit > 0 and candidate_count(library_ids, limit) <= limit


def ef_search_for(top_n: int) -> int:
    """ef_search for a query returning `top_n` rows: the tuned quality floor, at least N."""
    return int(min(MAX_EF_SEARCH, max(settings.CLETIR_HNSW_EF_SEARCH, top_n)))


def scope_sql(space: EmbeddingSpace) -> str:
    """`FROM ... WHERE` of the vectors `e` in `space` of the photos `a` in the libraries
    %(libraries)s, failed photos excluded (parameters: `scope_params`). Every query that scores
    a search's scope reads it through this, so the scope is decided in one place."""
    embeddings, assets = AssetEmbedding._meta.db_table, Asset._meta.db_table
    # The space id is an inlined integer, not a parameter: the planner must see the partial
    # index predicate `space_id = N` as a constant to use the index.
    return f"""
        FROM "{embeddings}" e
        JOIN "{assets}" a ON a.id = e.asset_id
        WHERE e.space_id = {int(space.pk)}
          AND a.library_id = ANY(%(libraries)s)
          AND a.status <> %(failed)s
    """


def scope_params(library_ids: list[int]) -> dict:
    return {"libraries": [int(pk) for pk in library_ids], "failed": Asset.Status.FAILED}


def _ranking_sql(space: EmbeddingSpace, exact: bool) -> str:
    dim, vlm, vision = int(space.dim), int(space.vlm_dim), int(space.vision_dim)
    embeddings = AssetEmbedding._meta.db_table
    scope = scope_sql(space)
    if exact:
        # The bare column (every vector of a space has its dim), which no index covers, so it is
        # always a full scan; done this way rather than with `SET enable_indexscan = off`, which
        # would outlive this query when the caller is inside a transaction. The sort keeps only
        # row ids (carrying 1.8 KB vectors through it costs ~15% at 100k photos); the hits'
        # vectors are read again by primary key.
        hits = f"SELECT e.id {scope} ORDER BY e.vector <#> %(query)s::halfvec({dim}) LIMIT %(limit)s"
        rows = f'hits JOIN "{embeddings}" v ON v.id = hits.id'
    else:
        # Exactly the indexed expression, or the planner ignores the index. The index scan
        # returns whole rows anyway, so the hits keep their vectors.
        hits = (f"SELECT e.asset_id, e.vector {scope} "
                f"ORDER BY {vector_expression(space)} <#> %(query)s::halfvec({dim}) LIMIT %(limit)s")
        rows = "hits v"
    # The score parts of the hits only (in the select list of the ordered query they would be
    # computed for every row the exact scan sorts). Computed here rather than from the vectors
    # in Python: sending 1000 vectors costs Postgres ~10 ms (halfvec_send writes them element by
    # element), the parts ~1 ms. halfvec -> vector widens the stored values exactly, so each
    # part is the float32 product of the float32 query half with the stored half. No ORDER BY:
    # `rank` sorts the rows by their scores anyway.
    return f"""
        WITH hits AS MATERIALIZED ({hits})
        SELECT v.asset_id,
               -(subvector(v.vector, 1, {vlm})::vector({vlm}) <#> %(text)s::vector({vlm})),
               -(subvector(v.vector, {vlm + 1}, {vision})::vector({vision}) <#> %(image)s::vector({vision}))
        FROM {rows}
    """


@contextmanager
def _ranking_cursor(exact: bool, top_n: int) -> Iterator:
    """A binary cursor in a transaction, with the HNSW scan settings for `top_n` rows unless the
    ranking is exact."""
    with transaction.atomic(), binary_cursor() as cursor:
        if not exact:
            _configure_scan(cursor, top_n)
        yield cursor


def _configure_scan(cursor, top_n: int) -> None:
    # SET LOCAL: the settings end with the transaction and never leak into the pooled
    # connection's next query (they only concern HNSW scans anyway). One round trip for all.
    cursor.execute(
        f"SET LOCAL hnsw.ef_search = {ef_search_for(top_n)}; "
        "SET LOCAL hnsw.iterative_scan = relaxed_order; "
        f"SET LOCAL hnsw.max_scan_tuples = {int(settings.CLETIR_HNSW_MAX_SCAN_TUPLES)}; "
        f"SET LOCAL hnsw.scan_mem_multiplier = {SCAN_MEM_MULTIPLIER}"
    )


def _params(space: EmbeddingSpace, u: np.ndarray, library_ids: list[int], top_n: int) -> dict:
    return {
        "query": VectorParam(u, half=True),
        "text": VectorParam(u[:space.vlm_dim], half=False),
        "image": VectorParam(u[space.vlm_dim:], half=False),
        "limit": int(top_n),
        **scope_params(library_ids),
    }


def _checked_query(space: EmbeddingSpace, query_vector: np.ndarray) -> np.ndarray:
    u = np.asarray(query_vector, dtype=np.float32)
    if u.shape != (space.dim,):
        raise ValueError(f"query vector must have shape ({space.dim},), got {u.shape}")
    return u


def explain(space: EmbeddingSpace, query_vector: np.ndarray, library_ids: list[int], top_n: int,
            exact: bool | None = None) -> str:
    """The plan `rank` gets for these arguments (EXPLAIN ANALYZE): tests and the benchmark
    check that the approximate ranking really reads the space's HNSW index."""
    u = _checked_query(space, query_vector)
    if exact is None:
        exact = choose_exact(library_ids)
    with _ranking_cursor(exact, top_n) as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + _ranking_sql(space, exact), _params(space, u, library_ids, top_n))
        return "\n".join(row[0] for row in cursor.fetchall())


def rank(
    space: EmbeddingSpace,
    query_vector: np.ndarray,
    library_ids: list[int],
    top_n: int,
    exact: bool | None = None,
) -> list[RankedRow]:
    """The `top_n` photos of `library_ids` in `space` by fused score <u, e(x)>, best first.

    `query_vector` is u = [(1-λ)t; λq] (`fusion.query_vector`), length `space.dim`; photos of
    failed assets are never returned. `exact=None` picks the method by the size of the scope
    (`choose_exact`); `True` ranks without the HNSW index (the baseline for tests and the
    benchmark), `False` always through it.
    """
    u = _checked_query(space, query_vector)
    if top_n < 1 or not library_ids:
        return []
    if exact is None:
        exact = choose_exact(library_ids)
    with _ranking_cursor(exact, top_n) as cursor:
        cursor.execute(_ranking_sql(space, exact), _params(space, u, library_ids, top_n), binary=True)
        rows = cursor.fetchall()
    if not rows:
        return []
    asset_ids = np.array([row[0] for row in rows], dtype=np.int64)
    text = np.array([row[1] for row in rows], dtype=np.float64)
    image = np.array([row[2] for row in rows], dtype=np.float64)
    fused = text + image
    # The database ordered by the half-precision query; the stored scores are the float32
    # query's, so order by them (ties: lower asset id first) to keep scores monotonic.
    order = np.lexsort((asset_ids, -fused))
    return [
        RankedRow(asset_id=int(asset_ids[i]), score=float(fused[i]), text_score=float(text[i]),
                  image_score=float(image[i]))
        for i in order
    ]
