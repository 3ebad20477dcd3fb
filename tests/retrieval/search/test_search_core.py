"""The search core on real Postgres: ranking against brute force, HNSW recall and filters,
scope, the proxy cache, refining (proxies off, examples, negatives), modes, failures, re-runs.

Photo vectors are planted straight into AssetEmbedding, so every expected ranking is known.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from django.db import OperationalError

from assets.models import Asset, Library, LibraryMembership
from retrieval.search import inputs as search_inputs
from retrieval.search import runner as search_runner
from retrieval.search.ranking import pgvector
from retrieval.engine.aggregator import AggregatorNet, aggregate, save_aggregator
from retrieval.engine.generator import ProxyGenerator, load_generator
from retrieval.models import AssetEmbedding, EmbeddingSpace, ProxyImage, ProxySet, Search, SearchRanking, SearchResult
from retrieval.engine.seeds import proxy_seeds
from retrieval.indexing.spaces import encoders_for, space_for_profile
from retrieval.indexing.vector_index import ensure_space_index, index_name
from retrieval.search.proxies import generator_key, get_or_generate_proxy_set, proxy_features, seeds_key
from retrieval.search.query import normalise_query
from retrieval.search.ranking import rank
from retrieval.search.scores import exact_parts
from retrieval.search.tasks import run_search
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db


# ---------------------------------------------------------------------------- helpers


def make_space(name: str, vlm_dim: int, vision_dim: int) -> EmbeddingSpace:
    return EmbeddingSpace.objects.create(
        name=name, profile="tiny", vlm_model="v", vision_model="d", generator_model="g",
        vlm_dim=vlm_dim, vision_dim=vision_dim, fingerprint=name,
    )


def plant(space: EmbeddingSpace, library: Library, vectors: np.ndarray, start: int = 0,
          status: str = Asset.Status.READY) -> list[int]:
    """Assets of `library` with the given fused vectors e = [I; V]; returns their ids."""
    assets = Asset.objects.bulk_create(
        [Asset(library=library, file=f"planted/{library.pk}/{start + i}.jpg", sha256=f"{start + i:064x}", status=status)
         for i in range(len(vectors))]
    )
    AssetEmbedding.objects.bulk_create(
        [AssetEmbedding(asset=a, space=space, vector=v) for a, v in zip(assets, vectors)], batch_size=2000
    )
    return [a.pk for a in assets]


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """What a halfvec column gives back."""
    return np.asarray(vectors, dtype=np.float16).astype(np.float32)


def brute_force(ids: list[int], vectors: np.ndarray, u: np.ndarray, n: int, split: int | None = None) -> list[int]:
    """Every photo scored exactly (retrieval.search.scores), best first, ties by asset id."""
    scores = exact_parts(u, np.asarray(vectors, dtype=np.float16), split or len(u) // 2).score.astype(np.float64)
    order = np.lexsort((np.array(ids), -scores))
    return [ids[i] for i in order[:n]]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def text_vector(space: EmbeddingSpace, text: str) -> np.ndarray:
    return encoders_for(space).encode_text([text])[0]


def basis(d: int, i: int) -> np.ndarray:
    v = np.zeros(d, dtype=np.float32)
    v[i] = 1.0
    return v


def fused(i_part: np.ndarray, v_part: np.ndarray) -> np.ndarray:
    return np.concatenate([i_part, v_part]).astype(np.float32)


# ---------------------------------------------------------------------------- ranking


@pytest.fixture
def planted_space(library):
    """3000 planted photos in a 16+16-dim space with its HNSW index; a second library (A2) of
    the same owner holds a tenth of them."""
    rng = np.random.default_rng(7)
    space = make_space("planted", 16, 16)
    n = 3000
    vectors = np.concatenate([unit_rows(rng, n, 16), unit_rows(rng, n, 16)], axis=1)
    small = Library.objects.create(name="A tenth", owner=library.owner)
    in_small = rng.random(n) < 0.1
    ids = np.empty(n, dtype=np.int64)
    ids[~in_small] = plant(space, library, vectors[~in_small])
    ids[in_small] = plant(space, small, vectors[in_small], start=n)
    ensure_space_index(space)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE retrieval_assetembedding")
        cursor.execute("ANALYZE assets_asset")
    return space, vectors, ids, in_small, small


def query(rng: np.random.Generator, lam: float = 0.4) -> np.ndarray:
    from retrieval.engine.fusion import query_vector

    return query_vector(unit_rows(rng, 1, 16)[0], unit_rows(rng, 1, 16)[0], lam)


EXACT_BACKENDS = [{"backend": "memory"}, {"exact": True}]


@pytest.mark.parametrize("how", EXACT_BACKENDS, ids=["memory", "pgvector"])
def test_exact_ranking_is_the_brute_force_numpy_ranking_with_exact_score_parts(planted_space, library, how):
    space, vectors, ids, in_small, small = planted_space
    rng = np.random.default_rng(1)
    everyone = [library.pk, small.pk]
    for _ in range(3):
        u = query(rng)
        rows = rank(space, u, everyone, top_n=200, **how).rows
        assert [r.asset_id for r in rows] == brute_force(list(ids), vectors, u, 200)
        # The parts are (1-λ)<t, I(x)> and λ<q, V(x)> of the stored vectors, and the score is
        # their float32 sum.
        by_id = dict(zip(ids.tolist(), as_stored(vectors)))
        for r in rows[:20]:
            e = by_id[r.asset_id].astype(np.float64)
            assert r.text_score == pytest.approx(float(u[:16] @ e[:16]), abs=1e-6)
            assert r.image_score == pytest.approx(float(u[16:] @ e[16:]), abs=1e-6)
            assert np.float32(r.text_score) + np.float32(r.image_score) == np.float32(r.score)
        assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)


def test_memory_and_pgvector_give_identical_top_n_with_ties_broken_by_asset_id(planted_space, library):
    space, vectors, ids, in_small, small = planted_space
    # Photos with identical vectors tie exactly: both backends order them by asset id.
    twins = plant(space, small, np.repeat(vectors[:1], 5, axis=0), start=90_000)
    rng = np.random.default_rng(9)
    for scope in ([library.pk, small.pk], [small.pk]):
        for _ in range(3):
            u = query(rng)
            in_memory = rank(space, u, scope, top_n=300, backend="memory").rows
            exact_scan = rank(space, u, scope, top_n=300, exact=True).rows
            assert [(r.asset_id, r.score, r.text_score, r.image_score) for r in in_memory] == \
                [(r.asset_id, r.score, r.text_score, r.image_score) for r in exact_scan]
        # The twins' own vector: they and the photo they copy tie at the top, by asset id.
        u = fused(vectors[0][:16], vectors[0][16:])
        tied = sorted(twins + ([int(ids[0])] if len(scope) == 2 or in_small[0] else []))
        assert [r.asset_id for r in rank(space, u, scope, top_n=len(tied), backend="memory").rows] == tied
        assert [r.asset_id for r in rank(space, u, scope, top_n=len(tied), exact=True).rows] == tied


def test_hnsw_ranking_reads_the_index_and_recalls_the_exact_top_100(planted_space, library):
    space, vectors, ids, in_small, small = planted_space
    rng = np.random.default_rng(2)
    everyone = [library.pk, small.pk]
    recalls = []
    for _ in range(10):
        u = query(rng)
        approx = rank(space, u, everyone, top_n=100, exact=False).rows
        exact = rank(space, u, everyone, top_n=100, exact=True).rows
        assert len(approx) == 100
        recalls.append(len({r.asset_id for r in approx} & {r.asset_id for r in exact}) / 100)
    assert np.mean(recalls) >= 0.97
    plan = pgvector.explain(space, query(rng), everyone, top_n=100, exact=False)
    assert index_name(space) in plan
    assert index_name(space) not in pgvector.explain(space, query(rng), everyone, top_n=100, exact=True)


def prefer_the_index() -> None:
    """For ~300 rows the planner rightly sorts them all; make it take the graph, the path a large
    library takes (SET LOCAL: until the end of this test's transaction)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")


def test_a_filter_keeping_a_tenth_still_returns_the_full_top_n_through_the_index(planted_space, monkeypatch):
    space, vectors, ids, in_small, small = planted_space
    assert 250 < in_small.sum() < 350
    prefer_the_index()
    rng = np.random.default_rng(3)
    recalls = []
    for _ in range(10):
        u = query(rng)
        approx = rank(space, u, [small.pk], top_n=100, exact=False).rows
        # Without the iterative scan the graph yields ef_search rows and the filter keeps ~10%.
        assert len(approx) == 100
        assert {r.asset_id for r in approx} <= set(ids[in_small].tolist())
        expected = brute_force(ids[in_small].tolist(), vectors[in_small], u, 100)
        recalls.append(len({r.asset_id for r in approx} & set(expected)) / 100)
    assert np.mean(recalls) >= 0.97
    assert index_name(space) in pgvector.explain(space, query(rng), [small.pk], top_n=100, exact=False)

    # The same query without the iterative scan: the graph stops at ef_search rows, the filter
    # keeps a tenth of them (what this test guards against).
    configure = pgvector._configure_scan

    def without_iterative_scan(cursor, top_n):
        configure(cursor, top_n)
        cursor.execute("SET LOCAL hnsw.iterative_scan = off")

    monkeypatch.setattr(pgvector, "_configure_scan", without_iterative_scan)
    assert len(rank(space, query(rng), [small.pk], top_n=100, exact=False).rows) < 50


def test_small_scopes_are_ranked_exactly_and_large_ones_through_the_index(planted_space, library, settings):
    space, vectors, ids, in_small, small = planted_space
    rng = np.random.default_rng(4)
    u = query(rng)
    settings.CLETIR_EXACT_RANK_MAX_ROWS = int(in_small.sum())  # the small library fits, both do not
    assert pgvector.choose_exact([small.pk]) and not pgvector.choose_exact([library.pk, small.pk])
    assert index_name(space) not in pgvector.explain(space, u, [small.pk], top_n=100)
    assert [r.asset_id for r in rank(space, u, [small.pk], top_n=100, backend="pgvector").rows] == brute_force(
        ids[in_small].tolist(), vectors[in_small], u, 100)
    assert index_name(space) in pgvector.explain(space, u, [library.pk, small.pk], top_n=100)
    # A scope the statistics put 10x above the limit is not counted (counting costs as much as
    # the graph query at 100k photos); one near the limit is.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as large:
        assert pgvector.candidate_count([library.pk, small.pk], int(in_small.sum())) > 4 * in_small.sum()
    with CaptureQueriesContext(connection) as near:
        assert pgvector.candidate_count([small.pk], int(in_small.sum())) == in_small.sum()
    assert not any("COUNT(" in q["sql"] for q in large.captured_queries)
    assert any("COUNT(" in q["sql"] for q in near.captured_queries)
    settings.CLETIR_EXACT_RANK_MAX_ROWS = 0  # 0: always the index
    assert not pgvector.choose_exact([small.pk])


@pytest.mark.parametrize("how", EXACT_BACKENDS, ids=["memory", "pgvector"])
def test_failed_photos_and_other_spaces_are_never_ranked(library, how):
    space, other = make_space("s1", 2, 2), make_space("s2", 2, 2)
    good = plant(space, library, np.array([[1, 0, 1, 0]] * 3, dtype=np.float32))
    failed = plant(space, library, np.array([[1, 0, 1, 0]] * 2, dtype=np.float32), start=10,
                   status=Asset.Status.FAILED)
    plant(other, library, np.array([[1, 0, 1, 0]] * 2, dtype=np.float32), start=20)
    rows = rank(space, np.array([0.5, 0, 0.5, 0], dtype=np.float32), [library.pk], top_n=10, **how).rows
    assert [r.asset_id for r in rows] == good  # equal scores: ascending asset id
    assert not set(failed) & {r.asset_id for r in rows}
    assert rank(space, np.zeros(4, dtype=np.float32), [], top_n=10, **how).rows == []


# ---------------------------------------------------------------------------- the pipeline


class GeneratorCalls:
    """Counts (and optionally intercepts) ProxyGenerator.generate_tensors calls (what proxies call)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, list[int]]] = []
        self.before = None
        original = ProxyGenerator.generate_tensors

        def generate(generator, query, seeds):
            self.calls.append((query, list(seeds)))
            if self.before:
                self.before(query, seeds)
            return original(generator, query, seeds)

        monkeypatch.setattr(ProxyGenerator, "generate_tensors", generate)


@pytest.fixture
def tiny(tiny_model_dir, media_root, monkeypatch):
    """The tiny profile's space, serving, with a generator-call counter."""
    space = space_for_profile("tiny")
    EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True)
    space.refresh_from_db()
    search_inputs.text_vectors.clear()
    space.generator_calls = GeneratorCalls(monkeypatch)
    return space


def new_search(user, text: str = "sailboat", libraries=(), **fields) -> Search:
    search = Search.objects.create(user=user, text=text, k=4, seed=0, top_n=fields.pop("top_n", 50), **fields)
    search.libraries.set(libraries)
    return search


def results(search: Search) -> list[SearchResult]:
    return list(SearchResult.objects.filter(search=search).order_by("rank"))


def planted_proxy_set(space: EmbeddingSpace, text: str, features: np.ndarray, seed: int = 0) -> ProxySet:
    """A cached proxy set with chosen features under the exact key a search of `text` uses."""
    from retrieval.search.proxies import _features_bytes

    generator = load_generator(space.profile)
    seeds = proxy_seeds(seed, len(features))
    return ProxySet.objects.create(
        query=normalise_query(text), space=space, generator_key=generator_key(generator.model_versions()),
        generator_versions=generator.model_versions(), seeds=seeds, seeds_key=seeds_key(seeds),
        prompt=generator.prompt(text), features=_features_bytes(features),
    )


def test_a_user_never_learns_from_the_cache_that_someone_else_searched(tiny, ann, library, make_user):
    """Bob's first search of a category Ann searched before looks, in every field he can read
    and on a stopwatch, like a search that generated its proxies; his second one is cached."""
    import time

    rng = np.random.default_rng(4)
    plant(tiny, library, np.concatenate([unit_rows(rng, 20, 32), unit_rows(rng, 20, 32)], axis=1))
    bob = make_user("bob")
    Library.objects.filter(pk=library.pk).update(owner=ann)
    LibraryMembership.objects.create(library=library, user=bob, role=LibraryMembership.Role.VIEWER)
    first = new_search(ann, "dog")
    run_search(first.pk)
    ProxySet.objects.filter(pk=Search.objects.get(pk=first.pk).proxy_set_id).update(
        generation_seconds=0.6, embedding_seconds=0.2)  # what making it cost (tiny models make it in ms)

    hers = new_search(bob, "Dog")
    started = time.monotonic()
    run_search(hers.pk)
    took = time.monotonic() - started
    hers.refresh_from_db()
    assert len(tiny.generator_calls.calls) == 1  # the GPU made the set once
    assert hers.proxy_set_id == Search.objects.get(pk=first.pk).proxy_set_id
    assert (hers.timings["proxies_cached"], hers.timings["text_cached"]) == (False, False)
    assert (hers.timings["generation"], hers.timings["proxy_embedding"]) == (0.6, 0.2)
    assert took >= 0.8  # as long as making the set took

    again = new_search(bob, "dog")
    run_search(again.pk)
    again.refresh_from_db()
    assert (again.timings["proxies_cached"], again.timings["text_cached"], again.timings["generation"]) == (
        True, True, 0.0)


def test_normalise_query_and_seeds():
    assert normalise_query("  Golden\tRetriever \n ") == "golden retriever"
    assert normalise_query("STRASSE") == normalise_query("straße")
    assert proxy_seeds(7, 4) == [7, 8, 9, 10]


def test_a_search_generates_proxies_once_and_a_repeat_reuses_them(tiny, ann, library):
    rng = np.random.default_rng(4)
    plant(tiny, library, np.concatenate([unit_rows(rng, 60, 32), unit_rows(rng, 60, 32)], axis=1))
    first = new_search(ann, "Sailboat  at sea")
    assert run_search(first.pk) == {"search": first.pk, "status": "done"}
    first.refresh_from_db()
    assert tiny.generator_calls.calls == [("sailboat at sea", [0, 1, 2, 3])]
    assert first.timings["proxies_cached"] is False and first.timings["generation"] > 0
    assert {"text", "proxies_lookup", "generation", "proxy_embedding", "aggregation", "ranking", "store",
            "total"} <= set(first.timings)
    assert (first.status, first.progress, first.result_count, first.aggregation) == ("done", 100, 50, "mean")
    assert first.lambda_used == 0.5 and first.space_id == tiny.pk
    proxy_set = first.proxy_set
    assert proxy_features(proxy_set).shape == (4, 32)
    images = list(ProxyImage.objects.filter(proxy_set=proxy_set))
    assert [(i.index, i.seed) for i in images] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert all(i.file.name == f"proxies/{proxy_set.pk}/{i.index}.webp" and i.file.storage.exists(i.file.name)
               for i in images)

    second = new_search(ann, "sailboat at SEA")
    run_search(second.pk)
    second.refresh_from_db()
    assert len(tiny.generator_calls.calls) == 1  # not called again
    assert second.proxy_set_id == proxy_set.pk and ProxySet.objects.count() == 1
    assert second.timings["proxies_cached"] is True and second.timings["generation"] == 0
    assert second.timings["text_cached"] is True
    assert [(r.asset_id, r.score) for r in results(second)] == [(r.asset_id, r.score) for r in results(first)]
    # The stored ranking is the brute-force one of the search's own query vector.
    t = encoders_for(tiny).encode_text(["sailboat at sea"])[0]
    q = aggregate(proxy_features(proxy_set), None)
    u = np.concatenate([0.5 * t, 0.5 * q])
    vectors = np.array([np.asarray(v, dtype=np.float32) for v in
                        AssetEmbedding.objects.filter(space=tiny).order_by("asset_id").values_list("vector", flat=True)])
    asset_ids = sorted(AssetEmbedding.objects.filter(space=tiny).values_list("asset_id", flat=True))
    assert [r.asset_id for r in results(second)] == brute_force(asset_ids, vectors, u, 50)
    assert [r.rank for r in results(second)] == list(range(1, 51))
    # Stored as computed: float32 parts and their float32 sum.
    assert all(np.float32(r.text_score) + np.float32(r.image_score) == np.float32(r.score) for r in results(second))


def test_a_concurrent_twin_that_stored_the_same_proxy_set_first_wins(tiny):
    twin = {}

    def store_twin_first(query, seeds):
        twin["set"] = planted_proxy_set(tiny, query, np.ones((len(seeds), 32), dtype=np.float32), seed=seeds[0])

    tiny.generator_calls.before = store_twin_first
    proxy_set, generated = get_or_generate_proxy_set(tiny, "Red Kite", [5, 6])
    assert generated is True and proxy_set.pk == twin["set"].pk
    assert ProxySet.objects.count() == 1 and not ProxyImage.objects.exists()


def test_scope_never_includes_a_library_the_user_cannot_see(tiny, ann, library, make_user):
    bob = make_user("bob")
    hidden = Library.objects.create(name="Bob's", owner=bob)
    shared = Library.objects.create(name="Shared with ann", owner=bob)
    LibraryMembership.objects.create(library=shared, user=ann, role=LibraryMembership.Role.VIEWER)
    # Every photo scores the same except bob's private ones, planted to be the best matches.
    zero = np.zeros(64, dtype=np.float32)
    mine = plant(tiny, library, np.stack([zero] * 3))
    theirs_shared = plant(tiny, shared, np.stack([zero] * 2), start=100)
    best = fused(text_vector(tiny, "sailboat"), np.zeros(32, dtype=np.float32))
    hidden_ids = plant(tiny, hidden, np.stack([best] * 3), start=200)

    everything = new_search(ann, text_only=True)
    picked_hidden = new_search(ann, libraries=[hidden, library], text_only=True)
    only_hidden = new_search(ann, libraries=[hidden], text_only=True)
    for search in (everything, picked_hidden, only_hidden):
        run_search(search.pk)
    assert [r.asset_id for r in results(everything)] == mine + theirs_shared
    assert [r.asset_id for r in results(picked_hidden)] == mine
    only_hidden.refresh_from_db()
    assert (only_hidden.status, only_hidden.result_count, results(only_hidden)) == ("done", 0, [])
    bobs = new_search(bob, text_only=True)
    run_search(bobs.pk)
    assert [r.asset_id for r in results(bobs)][:3] == hidden_ids


@pytest.fixture
def orthogonal(tiny, ann, library):
    """Four cached proxies g_i = e_i in the vision half, photos whose V(x) is known:
    P_i (V = e_i, i = 0..5) and no text signal (I(x) = 0), so the image half decides."""
    d = 32
    planted_proxy_set(tiny, "sailboat", np.stack([basis(d, i) for i in range(4)]))
    zero = np.zeros(d, dtype=np.float32)
    photos = plant(tiny, library, np.stack([fused(zero, basis(d, i)) for i in range(6)]))
    return photos


def image_scores(search: Search) -> dict[int, float]:
    return {r.asset_id: r.image_score for r in results(search)}


def test_switching_off_a_proxy_and_adding_a_negative_rerank_as_planted(tiny, ann, orthogonal):
    p = orthogonal
    parent = new_search(ann, lambda_override=0.5, top_n=6)
    run_search(parent.pk)
    parent.refresh_from_db()
    # A planted set that none of Ann's searches used: nothing generated, but for Ann it is not
    # "cached" (cache_privacy); it cost nothing to make, so nothing is waited out.
    assert parent.timings["proxies_cached"] is False and tiny.generator_calls.calls == []
    assert parent.timings["generation"] == 0.0
    # q = (e0+e1+e2+e3)/2: the four proxy photos tie at λ·0.5 (ties by id), P4 and P5 score 0.
    assert [r.asset_id for r in results(parent)] == p
    assert image_scores(parent) == pytest.approx({**{i: 0.25 for i in p[:4]}, p[4]: 0.0, p[5]: 0.0})

    off = new_search(ann, parent=parent, disabled_proxies=[0], lambda_override=0.5, top_n=6)
    run_search(off.pk)
    off.refresh_from_db()
    # q = (e1+e2+e3)/√3: P0 falls from the top to the zero-score tail.
    assert [r.asset_id for r in results(off)] == [p[1], p[2], p[3], p[0], p[4], p[5]]
    assert image_scores(off)[p[1]] == pytest.approx(0.5 / math.sqrt(3), abs=1e-3)
    assert image_scores(off)[p[0]] == pytest.approx(0.0, abs=1e-6)
    assert off.proxy_set_id == parent.proxy_set_id and off.timings["proxies_lookup"] == 0.0

    negative = new_search(ann, parent=parent, lambda_override=0.5, top_n=6)
    negative.negative_assets.set([p[1]])
    run_search(negative.pk)
    # q' = normalize(q - β e1) with β = 0.5: (e0 + e2 + e3)/√3, so P1 drops behind P0, P2, P3.
    assert [r.asset_id for r in results(negative)] == [p[0], p[2], p[3], p[1], p[4], p[5]]
    assert image_scores(negative)[p[1]] == pytest.approx(0.0, abs=1e-3)

    example = new_search(ann, parent=parent, lambda_override=0.5, top_n=6)
    example.positive_assets.set([p[5]])
    run_search(example.pk)
    # A fifth token e5: q = (e0+..+e3+e5)/√5, so P5 joins the tie at the top (ids decide).
    assert [r.asset_id for r in results(example)] == [p[0], p[1], p[2], p[3], p[5], p[4]]
    assert image_scores(example)[p[5]] == pytest.approx(0.5 / math.sqrt(5), abs=1e-3)


def test_negative_text_pushes_down_what_its_generated_proxies_look_like(tiny, ann, orthogonal, settings):
    p = orthogonal
    planted_proxy_set(tiny, "motorboat", np.stack([basis(32, 2)] * 4))
    settings.CLETIR_NEGATIVE_WEIGHT = 0.5
    search = new_search(ann, negative_text="Motorboat", lambda_override=0.5, top_n=6)
    run_search(search.pk)
    search.refresh_from_db()
    assert search.negative_proxy_set.query == "motorboat" and tiny.generator_calls.calls == []
    assert [r.asset_id for r in results(search)] == [p[0], p[1], p[3], p[2], p[4], p[5]]


def test_text_only_ranks_by_the_text_alone_and_generates_nothing(tiny, ann, library):
    t = text_vector(tiny, "lighthouse")
    rng = np.random.default_rng(5)
    others = plant(tiny, library, np.concatenate([unit_rows(rng, 20, 32) * 0.5, unit_rows(rng, 20, 32)], axis=1))
    best = plant(tiny, library, fused(t, -np.ones(32, dtype=np.float32))[None], start=100)
    search = new_search(ann, "Lighthouse", text_only=True, top_n=21)
    run_search(search.pk)
    search.refresh_from_db()
    assert (search.status, search.lambda_used, search.aggregation, search.proxy_set) == ("done", 0.0, "none", None)
    assert tiny.generator_calls.calls == [] and not ProxySet.objects.exists()
    rows = results(search)
    assert rows[0].asset_id == best[0] and rows[0].text_score == pytest.approx(1.0, abs=2e-3)
    assert all(r.image_score == 0.0 for r in rows) and len(rows) == 1 + len(others)


def test_search_by_example_photo_alone(tiny, ann, library):
    d = 32
    zero = np.zeros(d, dtype=np.float32)
    near = (basis(d, 3) + 0.5 * basis(d, 4)) / np.sqrt(1.25)
    ids = plant(tiny, library, np.stack([fused(zero, basis(d, 4)), fused(zero, basis(d, 3)), fused(zero, near)]))
    search = new_search(ann, text="", top_n=3)
    search.positive_assets.set([ids[1]])
    run_search(search.pk)
    search.refresh_from_db()
    assert (search.status, search.lambda_used, search.aggregation) == ("done", 1.0, "mean")
    assert tiny.generator_calls.calls == [] and "text" not in search.timings
    assert [r.asset_id for r in results(search)] == [ids[1], ids[2], ids[0]]
    assert [r.score for r in results(search)] == pytest.approx([1.0, 1 / np.sqrt(1.25), 0.0], abs=1e-3)


def test_the_trained_aggregator_of_the_space_and_its_lambda_are_used(tiny, ann, orthogonal, media_root):
    torch.manual_seed(0)
    net = AggregatorNet(32, vision_model=tiny.vision_model)
    with torch.no_grad():
        net.w.fill_(1.0)
    save_aggregator(net, media_root / "aggregators" / "net.safetensors")
    EmbeddingSpace.objects.filter(pk=tiny.pk).update(aggregator_file="aggregators/net.safetensors")
    search = new_search(ann, top_n=6)
    run_search(search.pk)
    search.refresh_from_db()
    lam = 1 / (1 + math.exp(-1.0))
    assert search.aggregation == "trained" and search.lambda_used == pytest.approx(lam)
    q = aggregate(np.stack([basis(32, i) for i in range(4)]), net)
    expected = {pk: lam * float(q[i]) for i, pk in enumerate(orthogonal)}
    assert image_scores(search) == pytest.approx(expected, abs=2e-3)


def test_a_failing_stage_marks_the_search_failed_with_the_reason(tiny, ann, library, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the index is corrupt")

    monkeypatch.setattr(search_runner, "rank", broken)
    search = new_search(ann, text_only=True)
    assert run_search(search.pk) == {"search": search.pk, "status": "failed"}
    search.refresh_from_db()
    assert search.status == "failed"
    assert search.error == "Ranking the photos failed: RuntimeError: the index is corrupt"
    assert not results(search)


def test_without_a_serving_space_a_search_fails_clearly(ann, db):
    search = new_search(ann)
    run_search(search.pk)
    search.refresh_from_db()
    assert search.status == "failed" and search.error.startswith("No photo index is ready for search yet")


def test_a_database_blip_is_retried_and_a_lasting_outage_fails(tiny, ann, library, monkeypatch):
    real_rank, failures = search_runner.rank, []

    def flaky(*args, **kwargs):
        if len(failures) < 1:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return real_rank(*args, **kwargs)

    plant(tiny, library, np.zeros((2, 64), dtype=np.float32))
    monkeypatch.setattr(search_runner, "rank", flaky)
    search = new_search(ann, text_only=True)
    run_search.apply(args=[search.pk])
    search.refresh_from_db()
    assert (search.status, search.result_count) == ("done", 2)

    def down(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(search_runner, "rank", down)
    lasting = new_search(ann, text_only=True)
    run_search.apply(args=[lasting.pk])
    lasting.refresh_from_db()
    assert lasting.status == "failed"
    assert lasting.error == "The database was unavailable: OperationalError: could not connect to server"


def test_reruns_are_idempotent(tiny, ann, library, monkeypatch):
    t, zero = text_vector(tiny, "sailboat"), np.zeros(32, dtype=np.float32)
    ids = plant(tiny, library, np.stack([fused((1.0 - i / 10) * t, zero) for i in range(4)]))
    search = new_search(ann, text_only=True, top_n=3)
    # A run that stopped half-way: a stale partial result, status still "ranking".
    store_ranked(search, [(ids[3], 9.0, 9.0, 0.0)])
    Search.objects.filter(pk=search.pk).update(status=Search.Status.RANKING, progress=75)
    run_search(search.pk)
    first = [(r.asset_id, r.rank, r.score) for r in results(search)]
    assert [a for a, _, _ in first] == ids[:3] and [r for _, r, _ in first] == [1, 2, 3]

    calls = []
    monkeypatch.setattr(search_runner, "rank", lambda *a, **k: calls.append(a) or [])
    run_search(search.pk)  # a duplicate delivery of a finished search
    assert calls == [] and [(r.asset_id, r.rank, r.score) for r in results(search)] == first


def test_the_task_is_routed_to_the_search_queue():
    from cletir_site.celery import app

    assert app.amqp.router.route({}, run_search.name)["queue"].name == "search"
    assert run_search.acks_late is True


def test_progress_steps_closer_than_the_interval_wait_for_the_next_write(tiny, ann, monkeypatch):
    search = new_search(ann)
    proxy_set = planted_proxy_set(tiny, "sailboat", np.eye(4, 32, dtype=np.float32))
    # The clock as the run reads it: start and last write, then each step (and each write).
    clock = iter([0.0, 0.0, 0.08, 0.3, 0.3, 0.35, 0.36]).__next__
    monkeypatch.setattr(search_runner.time, "perf_counter", clock)
    run = search_runner._Run(search)
    stored = lambda: Search.objects.values_list("status", "progress", "proxy_set").get(pk=search.pk)  # noqa: E731
    run.progress(15)  # 0.08 s after the last write: held
    assert stored() == ("queued", 0, None)
    run.progress(55)  # 0.3 s: written
    assert stored() == ("queued", 55, None)
    run.progress(65, proxy_set=proxy_set)  # 0.05 s after that write: held, then written with the next state change
    assert stored() == ("queued", 55, None)
    search.mark_ranking(**run.held())
    assert stored() == ("ranking", 75, proxy_set.pk)


def test_deleting_a_photo_or_a_search_deletes_its_results(tiny, ann, library):
    t, zero = text_vector(tiny, "sailboat"), np.zeros(32, dtype=np.float32)
    ids = plant(tiny, library, np.stack([fused((1.0 - i / 10) * t, zero) for i in range(3)]))
    search = new_search(ann, text_only=True, top_n=3)
    run_search(search.pk)
    assert [r.asset_id for r in results(search)] == ids
    Asset.objects.get(pk=ids[0]).delete()
    assert [r.asset_id for r in results(search)] == ids[1:]
    search.delete()
    assert not SearchResult.objects.filter(asset_id__in=ids).exists() and not SearchRanking.objects.exists()
