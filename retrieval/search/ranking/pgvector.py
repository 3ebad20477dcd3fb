"""The pgvector backend: ranking a scope by one pgvector query over the stored vectors.

The fused score of METHOD.md step 5 is the inner product <u, e(x)> of the query vector
u = [(1-λ)t; λq] with the stored photo vector e(x) = [I(x); V(x)], so a ranking is one
`ORDER BY e <#> u LIMIT N`, over the space's partial HNSW index (see
`retrieval.indexing.vector_index`) or as an exact scan. The rows it returns carry their vectors
and are scored exactly in Python (`retrieval.search.scores`), like every backend's.

Three pgvector facts shape the graph query (ARCHITECTURE.md, "pgvector facts that bite"):

* `hnsw.ef_search` caps how many rows one graph search yields; it is raised to at least N
  (up to pgvector's maximum of 1000; beyond that the iterative scan supplies the rest).
* The scope's filter is applied after the graph scan, so without `hnsw.iterative_scan` a filter
  keeping 10% of the rows returns ~10% of N. With `relaxed_order` the scan keeps going until N
  rows passed the filter (or `hnsw.max_scan_tuples` were visited), but rows may come out
  slightly out of order: they are sorted again by their exact scores.
* The iterative scan stops when its memory passes `work_mem × hnsw.scan_mem_multiplier`; for
  896-dim vectors the default (1 × 4 MB) ends a filtered scan after a few thousand tuples, so
  the multiplier is raised for the duration of the query.

A fourth fact: a filter that keeps few rows is where the graph is weakest (the scan has to go
deep, and its order gets rough: recall@100 ~0.86 for a 10% filter at 100k photos in
bench/search.py) and where an exact scan is cheapest (it reads only the filtered rows, through
the btree indexes on the library and the (asset, space) pair). So a ranking over at most
`CLETIR_EXACT_RANK_MAX_ROWS` candidate photos is exact, and only larger scopes use the graph.

The exact scan orders by the half-precision query; its scores are within a bound of the exact
ones (the query's rounding times the largest vector norm of the space, plus float32
accumulation), so it fetches enough rows that the exact top N is among them (`exact.exact_top`).
The graph's answer is approximate by nature: its rows are scored exactly and sorted, nothing more.

The match count and the albums read a scope's fast scores through `scope_scores` (one exact
scan returning (asset id, score) pairs, float32 query).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from assets.models import Asset

from ...indexing.vector_index import vector_expression
from ...models import AssetEmbedding, EmbeddingSpace
from ...vector_params import VectorParam, binary_cursor
from ..cutoff import ScoreHistogram
from .base import Ranking
from .exact import TINY, exact_top
from .scope import Scope

# pgvector refuses an ef_search above 1000.
MAX_EF_SEARCH = 1000
# Memory of an iterative scan = work_mem × this multiplier (pgvector's default is 1): headroom so
# that memory, not CLETIR_HNSW_MAX_SCAN_TUPLES, never ends a filtered scan of 896-dim vectors
# early (bench/search.py: a 10% filter returns the full N at 100k photos).
SCAN_MEM_MULTIPLIER = 8
# An exact scan first fetches this many rows beyond N (more when the error bound asks for it).
FIRST_EXTRA_ROWS = 64
UNIT_ROUNDOFF_32 = 2.0 ** -24

# A scope the statistics estimate at more than this many times the exact-scan limit (or less
# than the limit divided by it) is decided without counting; being on the wrong side would
# need statistics wrong by 3x, which autovacuum's re-analyze after 10% of a table changed
# prevents, and an under-estimate would only cost speed (an exact scan ranks any scope correctly).
ESTIMATE_MARGIN = 3


def candidate_count(scope: Scope | list[int], up_to: int) -> int:
    """How many photos a ranking over this scope considers (failed ones never count),
    counted no further than `up_to` + 1: the decision needs no more. Counting even that far
    costs ~5 ms (20k rows), as much as the graph query it decides about, so a scope that the
    table statistics put far from `up_to` is not counted at all: its estimate is returned.
    A scope narrowed by filters (`Scope.photos`) is counted whenever its libraries are large:
    the statistics know the libraries, not how much a filter keeps, and a filter keeping few
    photos is where the graph loses rows and an exact scan is cheap."""
    scope = Scope.of(scope)
    estimate = _estimated_photos(list(scope.library_ids))
    far_above = estimate is not None and estimate > ESTIMATE_MARGIN * up_to and scope.photos is None
    if far_above or (estimate is not None and estimate * ESTIMATE_MARGIN < up_to):
        return estimate
    photos = Asset.objects.filter(library_id__in=scope.library_ids).exclude(status=Asset.Status.FAILED).order_by()
    if scope.photos is not None:
        photos = photos.filter(pk__in=scope.photos.order_by().values("pk"))
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


def choose_exact(scope: Scope | list[int]) -> bool:
    """Exact scan for small scopes (cheap there, and recall 1), the HNSW graph for large ones."""
    limit = settings.CLETIR_EXACT_RANK_MAX_ROWS
    return limit > 0 and candidate_count(scope, limit) <= limit


def ef_search_for(top_n: int) -> int:
    """ef_search for a query returning `top_n` rows: the tuned quality floor, at least N."""
    return int(min(MAX_EF_SEARCH, max(settings.CLETIR_HNSW_EF_SEARCH, top_n)))


def scope_sql(space: EmbeddingSpace, scope: Scope) -> tuple[str, dict]:
    """(`FROM ... WHERE` of the vectors `e` in `space` of the scope's photos `a`, its
    parameters). Every query that scores a scope reads it through this, so the scope is decided
    in one place."""
    embeddings, assets = AssetEmbedding._meta.db_table, Asset._meta.db_table
    condition, params = scope.where("a")
    # The space id is an inlined integer, not a parameter: the planner must see the partial
    # index predicate `space_id = N` as a constant to use the index.
    return f"""
        FROM "{embeddings}" e
        JOIN "{assets}" a ON a.id = e.asset_id
        WHERE e.space_id = {int(space.pk)} AND {condition}
    """, params


# The watermark of the snapshot the ranking reads (see `Ranking.as_of`), on every row it returns.
AS_OF = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"


def _ranking_sql(space: EmbeddingSpace, scope: Scope, exact: bool) -> tuple[str, dict]:
    dim = int(space.dim)
    embeddings = AssetEmbedding._meta.db_table
    scope_from, params = scope_sql(space, scope)
    if exact:
        # The bare column (every vector of a space has its dim), which no index covers, so it is
        # always a full scan; done this way rather than with `SET enable_indexscan = off`, which
        # would outlive this query when the caller is inside a transaction. The sort keeps only
        # row ids (carrying 1.8 KB vectors through it costs ~15% at 100k photos); the hits'
        # vectors are read again by primary key.
        return f"""
            WITH hits AS MATERIALIZED (
                SELECT e.id, e.vector <#> %(query)s::halfvec({dim}) AS distance {scope_from}
                ORDER BY distance LIMIT %(limit)s
            )
            SELECT v.asset_id, -hits.distance, halfvec_send(v.vector), {AS_OF}
            FROM hits JOIN "{embeddings}" v ON v.id = hits.id ORDER BY hits.distance, v.asset_id
        """, params
    # Exactly the indexed expression, or the planner ignores the index. The index scan returns
    # whole rows anyway, so the hits keep their vectors.
    return f"""
        SELECT e.asset_id, -({vector_expression(space)} <#> %(query)s::halfvec({dim})), halfvec_send(e.vector), {AS_OF}
        {scope_from}
        ORDER BY {vector_expression(space)} <#> %(query)s::halfvec({dim}) LIMIT %(limit)s
    """, params


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


def checked_query(space: EmbeddingSpace, query_vector: np.ndarray) -> np.ndarray:
    u = np.asarray(query_vector, dtype=np.float32)
    if u.shape != (space.dim,):
        raise ValueError(f"query vector must have shape ({space.dim},), got {u.shape}")
    return u


def explain(space: EmbeddingSpace, query_vector: np.ndarray, scope: Scope | list[int], top_n: int,
            exact: bool | None = None) -> str:
    """The plan `rank` gets for these arguments (EXPLAIN ANALYZE): tests and the benchmark
    check that the approximate ranking really reads the space's HNSW index."""
    u, scope = checked_query(space, query_vector), Scope.of(scope)
    if exact is None:
        exact = choose_exact(scope)
    sql, params = _ranking_sql(space, scope, exact)
    with _ranking_cursor(exact, top_n) as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql,
                       {**params, "query": VectorParam(u, half=True), "limit": int(top_n)})
        return "\n".join(row[0] for row in cursor.fetchall())


def halfvec_rows(payloads: list, dim: int) -> np.ndarray:
    """float16 rows from pgvector's binary halfvecs (int16 dim, int16 unused, big-endian values)."""
    if not payloads:
        return np.zeros((0, dim), dtype=np.float16)
    row = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f2", (dim,))])
    parsed = np.frombuffer(b"".join(bytes(p) for p in payloads), dtype=row)
    if not np.all(parsed["dim"] == dim):
        raise ValueError(f"the space's vectors are not all {dim}-dimensional")
    return parsed["values"].astype(np.float16)


def rank(space: EmbeddingSpace, query_vector: np.ndarray, scope: Scope | list[int], top_n: int,
         exact: bool | None = None) -> Ranking:
    """The `top_n` photos of the scope in `space`, best first (exact scores; see the module
    docstring). `exact=None` picks the method by the size of the scope (`choose_exact`); `True`
    ranks without the HNSW index (the baseline for tests and the benchmark), `False` always
    through it."""
    u, scope = checked_query(space, query_vector), Scope.of(scope)
    counted = lambda: scope_scores(space, u, scope)  # noqa: E731
    if top_n < 1 or scope.is_empty:
        return Ranking.empty("pgvector", counted)
    if exact is None:
        exact = choose_exact(scope)
    sql, params = _ranking_sql(space, scope, exact)
    half = VectorParam(u, half=True)
    as_of: list[int] = []

    def fetch(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with _ranking_cursor(exact, m) as cursor:
            cursor.execute(sql, {**params, "query": half, "limit": int(m)}, binary=True)
            rows = cursor.fetchall()
        as_of[:] = [rows[0][3]] if rows else []
        return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64),
                halfvec_rows([r[2] for r in rows], space.dim))

    error = exact_scan_error(space, u) if exact else None
    asset_ids, parts = exact_top(fetch, np.iinfo(np.int64).max, top_n + FIRST_EXTRA_ROWS if exact else top_n, error,
                                 u, space.vlm_dim, top_n)
    return Ranking(asset_ids, parts, "pgvector", counted, as_of[0] if as_of else None)


# ---------------------------------------------------------------------------- error bounds

_norm_bounds: dict[int, tuple[int, float]] = {}


def largest_norm(space: EmbeddingSpace) -> float:
    """The largest norm of a vector in the space, read incrementally: the vectors added since the
    last call (vectors are never updated in place: a re-index deletes and inserts)."""
    seen, norm = _norm_bounds.get(space.pk, (0, 0.0))
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT max(id), max(l2_norm(vector)) FROM "{AssetEmbedding._meta.db_table}" '
                       f"WHERE space_id = %s AND id > %s", [space.pk, seen])
        newest, largest = cursor.fetchone()
    if newest is not None:
        norm = max(norm, float(largest))
        _norm_bounds[space.pk] = (int(newest), norm)
    return norm * (1 + 2 * UNIT_ROUNDOFF_32)


def _gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF_32 / (1 - n * UNIT_ROUNDOFF_32)


def exact_scan_error(space: EmbeddingSpace, u: np.ndarray) -> float:
    """|fast - exact| of the exact scan: the half-precision query's rounding, float32 sums."""
    rounded = u.astype(np.float16).astype(np.float64)
    norm = largest_norm(space)
    error = float(np.linalg.norm(u.astype(np.float64) - rounded)) * norm + _gamma(space.dim) * float(np.linalg.norm(rounded)) * norm
    return error * 1.01 + TINY


# ---------------------------------------------------------------------------- a scope's fast scores


class ArrayScopeScores:
    """Fast scores of a scope held in numpy (one pgvector scan); vectors are fetched by asset id."""

    def __init__(self, space: EmbeddingSpace, asset_ids: np.ndarray, fast: np.ndarray, error: float) -> None:
        self.space, self.asset_ids, self.fast, self.error = space, asset_ids, fast, error
        self.size = len(asset_ids)

    def histogram(self, bins: int) -> ScoreHistogram:
        return ScoreHistogram.of(self.fast, bins)

    def count_above(self, score: float) -> int:
        return int(np.count_nonzero(self.fast > score))

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.size)
        best = np.argpartition(-self.fast, k - 1)[:k] if 0 < k < self.size else np.arange(self.size)
        best = best[np.argsort(-self.fast[best], kind="stable")]
        return best, self.fast[best]

    def select(self, low: float, high: float) -> np.ndarray:
        return np.flatnonzero((self.fast >= low) & (self.fast <= high))

    def photos(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asset_ids = self.asset_ids[positions]
        return asset_ids, stored_vectors(self.space, asset_ids)


def stored_vectors(space: EmbeddingSpace, asset_ids: np.ndarray) -> np.ndarray:
    """The stored float16 vectors of these photos in `space`, in the order given."""
    if not len(asset_ids):
        return np.zeros((0, space.dim), dtype=np.float16)
    with binary_cursor() as cursor:
        cursor.execute(f'SELECT asset_id, halfvec_send(vector) FROM "{AssetEmbedding._meta.db_table}" '
                       f"WHERE space_id = {int(space.pk)} AND asset_id = ANY(%s)",
                       [[int(pk) for pk in asset_ids]], binary=True)
        rows = cursor.fetchall()
    by_id = dict(zip((r[0] for r in rows), halfvec_rows([r[1] for r in rows], space.dim)))
    missing = [int(pk) for pk in asset_ids if int(pk) not in by_id]
    if missing:
        raise LookupError(f"photos {missing[:5]} have no vector in space {space.pk} any more")
    return np.stack([by_id[int(pk)] for pk in asset_ids])


def scope_scores(space: EmbeddingSpace, query_vector: np.ndarray, scope: Scope | list[int]) -> ArrayScopeScores:
    """The fast score <u, e(x)> of every photo of the scope, computed by Postgres against the
    float32 query (halfvec -> vector widens the stored values exactly; float32 sums)."""
    u, scope = checked_query(space, query_vector), Scope.of(scope)
    error = (_gamma(space.dim) * float(np.linalg.norm(u.astype(np.float64))) * largest_norm(space)) * 1.01 + TINY
    if scope.is_empty:
        return ArrayScopeScores(space, np.zeros(0, dtype=np.int64), np.zeros(0), error)
    scope_from, params = scope_sql(space, scope)
    sql = f"SELECT e.asset_id, -(e.vector::vector <#> %(query)s::vector) {scope_from}"
    with binary_cursor() as cursor:
        cursor.execute(sql, {**params, "query": VectorParam(u, half=False)}, binary=True)
        rows = cursor.fetchall()
    return ArrayScopeScores(space, np.array([r[0] for r in rows], dtype=np.int64),
                            np.array([r[1] for r in rows], dtype=np.float64), error)
