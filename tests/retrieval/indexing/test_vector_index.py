"""Per-space partial HNSW indexes over the dimensionless halfvec column."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from assets.models import Asset, Library
from retrieval.models import AssetEmbedding, EmbeddingSpace
from retrieval.indexing.vector_index import ensure_space_index, index_name, vector_expression

pytestmark = pytest.mark.django_db
N = 2000  # enough rows that the planner prefers the graph to sorting the whole space


def _space(name: str, vlm_dim: int, vision_dim: int) -> EmbeddingSpace:
    return EmbeddingSpace.objects.create(
        name=name, profile="tiny", vlm_model="v", vision_model="d", generator_model="g",
        vlm_dim=vlm_dim, vision_dim=vision_dim, fingerprint=name,
    )


def test_two_spaces_of_different_dims_share_the_table_and_rank_like_numpy(make_user):
    owner = make_user("ann")
    library = Library.objects.create(name="L", owner=owner)
    rng = np.random.default_rng(0)
    assets = [Asset.objects.create(library=library, sha256=f"{i:064x}", file=f"x/{i}.jpg") for i in range(N)]
    small, large = _space("s8", 4, 4), _space("s12", 8, 4)
    vectors = rng.standard_normal((N, 8)).astype(np.float16).astype(np.float32)
    AssetEmbedding.objects.bulk_create(
        [AssetEmbedding(asset=a, space=small, vector=v) for a, v in zip(assets, vectors)]
        + [AssetEmbedding(asset=a, space=large, vector=rng.standard_normal(12)) for a in assets[:50]]
    )
    ensure_space_index(small)
    ensure_space_index(small)  # idempotent
    query = rng.standard_normal(8).astype(np.float32)
    sql = (
        f"SELECT asset_id FROM retrieval_assetembedding WHERE space_id = %s "
        f"ORDER BY {vector_expression(small)} <#> %s::halfvec({small.dim}) LIMIT 10"
    )
    literal = "[" + ",".join(f"{x:.6f}" for x in query) + "]"
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE retrieval_assetembedding")
        cursor.execute("SET LOCAL hnsw.ef_search = 100")  # pgvector costs the scan by ef_search
        cursor.execute("EXPLAIN " + sql, [small.pk, literal])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(sql, [small.pk, literal])
        got = [row[0] for row in cursor.fetchall()]
    assert index_name(small) in plan
    expected = [assets[i].pk for i in np.argsort(-(vectors @ query.astype(np.float16).astype(np.float32)))[:10]]
    assert got == expected
