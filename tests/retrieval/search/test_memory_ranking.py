"""The memory backend on real Postgres: a worker's copy of a space's vectors kept current by
the change feed, reloaded when it cannot prove it is current, identical to pgvector's exact
ranking, and never the cause of a leak (results are checked in the database before storing).

CPU tensors here; a GPU worker runs the same code on CUDA tensors.
"""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

import numpy as np
import pytest
import torch
from django.db import connection

from assets.models import Asset, Library
from retrieval.models import AssetEmbedding, EmbeddingSpace, SearchResult
from retrieval.search import runner as search_runner
from retrieval.search.ranking import Scope, feed, memory, rank
from retrieval.search.scores import exact_parts
from retrieval.search.tasks import run_search
from retrieval.sweeper import sweep_stale_work
from tests.retrieval.search.test_search_core import (  # noqa: F401 (fixtures)
    brute_force, fused, make_space, new_search, plant, text_vector, tiny, unit_rows,
)

pytestmark = pytest.mark.django_db
D = 16  # each half


@pytest.fixture(autouse=True)
def fresh_copies():
    """Every test starts without copies, as a new worker process does."""
    memory.drop_copies()
    yield
    memory.drop_copies()


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16 product", "bfloat16 product"])
def product(request, monkeypatch):
    """The fast pass in float16 over the stored rows, or over their bfloat16 twin (what a CPU
    with fast bfloat16 kernels measures best): both must give the exact answers."""
    monkeypatch.setitem(memory._product_dtypes, "cpu", request.param)
    return request.param


@pytest.fixture
def planted(library):
    """A 16+16-dim space with 300 photos in `library`, and a second library of the same owner."""
    rng = np.random.default_rng(11)
    space = make_space("memory", D, D)
    vectors = np.concatenate([unit_rows(rng, 300, D), unit_rows(rng, 300, D)], axis=1)
    ids = plant(space, library, vectors)
    other = Library.objects.create(name="Other", owner=library.owner)
    return space, vectors, ids, other


def query(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([0.5 * unit_rows(rng, 1, D)[0], 0.5 * unit_rows(rng, 1, D)[0]]).astype(np.float32)


def ranked(space, u, libraries, n=50) -> list[int]:
    return [r.asset_id for r in rank(space, u, libraries, n, backend="memory").rows]


def exact_truth(space, u, libraries, n=50) -> list[int]:
    return [r.asset_id for r in rank(space, u, libraries, n, exact=True).rows]


def test_a_photo_deleted_after_the_load_is_never_returned(planted, library):
    space, vectors, ids, other = planted
    u = query(1)
    before = ranked(space, u, [library.pk])
    copy = memory.loaded(space)
    Asset.objects.get(pk=before[0]).delete()
    after = ranked(space, u, [library.pk])
    assert before[0] not in after and after == exact_truth(space, u, [library.pk])
    assert memory.loaded(space) is copy  # the feed told it, no reload


def test_a_photo_moved_out_of_the_scope_s_libraries_is_never_returned(planted, library):
    space, vectors, ids, other = planted
    u = query(2)
    best = ranked(space, u, [library.pk])[0]
    Asset.objects.filter(pk=best).update(library=other)
    assert best not in ranked(space, u, [library.pk])
    assert ranked(space, u, [other.pk]) == [best]
    assert ranked(space, u, [library.pk, other.pk]) == exact_truth(space, u, [library.pk, other.pk])


def test_a_photo_marked_failed_is_never_returned_and_comes_back_when_it_recovers(planted, library):
    space, vectors, ids, other = planted
    u = query(3)
    best = ranked(space, u, [library.pk])[0]
    Asset.objects.filter(pk=best).update(status=Asset.Status.FAILED)
    assert best not in ranked(space, u, [library.pk])
    Asset.objects.filter(pk=best).update(status=Asset.Status.READY)
    assert ranked(space, u, [library.pk])[0] == best


def test_a_photo_indexed_after_the_load_appears_in_the_next_search(planted, library):
    space, vectors, ids, other = planted
    u = query(4)
    ranked(space, u, [library.pk])
    new = plant(space, library, fused(u[:D] / np.linalg.norm(u[:D]), u[D:] / np.linalg.norm(u[D:]))[None], start=5000)
    assert ranked(space, u, [library.pk])[0] == new[0]
    # Re-indexed with another vector (a re-index deletes and inserts): the new score counts.
    AssetEmbedding.objects.filter(asset_id=new[0]).delete()
    AssetEmbedding.objects.create(asset_id=new[0], space=space, vector=-vectors[0])
    assert new[0] not in ranked(space, u, [library.pk])
    assert ranked(space, -u, [library.pk], n=300) == exact_truth(space, -u, [library.pk], n=300)


def test_a_truncated_log_a_rewound_database_or_a_recreated_space_force_a_reload(planted, library):
    space, vectors, ids, other = planted
    u = query(5)
    expected = ranked(space, u, [library.pk])

    def reloaded() -> bool:
        before = memory.loaded(space)
        assert ranked(space, u, [library.pk]) == exact_truth(space, u, [library.pk])
        return memory.loaded(space) is not before

    assert not reloaded()
    with connection.cursor() as cursor:  # a TRUNCATE is invisible to row triggers: it moves the epoch
        cursor.execute(f"TRUNCATE {feed.CHANGES}")
    assert reloaded()
    # A restored database's transaction ids lag the ones the copy saw.
    memory.loaded(space).watermark += 10**9
    assert reloaded()
    # The space deleted and created again under the same id (a restore of an older dump).
    pk = space.pk
    space.delete()
    again = EmbeddingSpace.objects.create(pk=pk, name="again", profile="tiny", vlm_model="v", vision_model="d",
                                          generator_model="g", vlm_dim=D, vision_dim=D, fingerprint="again")
    plant(again, library, -vectors[:50], start=7000)
    rows = ranked(again, u, [library.pk])
    assert not set(rows) & set(expected) and rows == exact_truth(again, u, [library.pk])


@pytest.mark.django_db(transaction=True)
def test_a_copy_idle_longer_than_the_feed_keeps_reloads_once(planted, library):
    """Changes are pruned after CLETIR_RANK_FEED_KEEP_SECONDS (the stale-work sweep): a copy
    whose watermark is older than what was pruned cannot prove it is current."""
    space, vectors, ids, other = planted
    u = query(6)
    ranked(space, u, [library.pk])
    idle = memory.loaded(space)
    Asset.objects.filter(pk=ids[0]).update(library=other)  # committed: a change the idle copy has not read
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {feed.CHANGES} SET created_at = now() - interval '2 hours'")
    assert sweep_stale_work().ranking_changes_pruned >= 1  # the sweep runs prune_changes
    assert ranked(space, u, [library.pk]) == exact_truth(space, u, [library.pk])
    reloaded = memory.loaded(space)
    assert reloaded is not idle and ids[0] not in ranked(space, u, [library.pk])
    assert memory.loaded(space) is reloaded  # a copy loaded after the prune has nothing to fear from it


def test_two_workers_give_identical_rankings(planted, library, product):
    """One worker loaded before a burst of changes and follows the feed; the other loads after."""
    space, vectors, ids, other = planted
    queries = [query(seed) for seed in range(20, 26)]
    for u in queries:
        ranked(space, u, [library.pk])
    first = memory._copies.copy()
    rng = np.random.default_rng(3)
    Asset.objects.filter(pk__in=ids[:10]).delete()
    Asset.objects.filter(pk__in=ids[10:20]).update(library=other)
    Asset.objects.filter(pk__in=ids[20:25]).update(status=Asset.Status.FAILED)
    plant(space, other, np.concatenate([unit_rows(rng, 40, D), unit_rows(rng, 40, D)], axis=1), start=9000)

    memory.drop_copies()
    scopes = ([library.pk], [other.pk], [library.pk, other.pk])
    fresh = [[rank(space, u, s, 100, backend="memory").rows for s in scopes] for u in queries]
    memory._copies.clear()
    memory._copies.update(first)
    followed = [[rank(space, u, s, 100, backend="memory").rows for s in scopes] for u in queries]
    assert memory._copies[space.pk] is first[space.pk]  # it followed the feed
    assert followed == fresh
    assert fresh == [[rank(space, u, s, 100, exact=True).rows for s in scopes] for u in queries]
    assert [[[r.asset_id for r in rows] for rows in per_scope] for per_scope in fresh] == \
        [[exact_truth(space, u, s, 100) for s in scopes] for u in queries]


def test_a_stale_copy_costs_a_rerank_never_a_leak(tiny, ann, library, monkeypatch):
    """A copy that missed a change ranks a photo that left the scope: the check in the database
    before storing catches it, the scope is ranked again, and the photo is never stored."""
    t, zero = text_vector(tiny, "sailboat"), np.zeros(32, dtype=np.float32)
    ids = plant(tiny, library, np.stack([fused((1.0 - i / 20) * t, zero) for i in range(8)]))
    other = Library.objects.create(name="Elsewhere", owner=library.owner)
    first = new_search(ann, text_only=True, top_n=5, libraries=[library])
    run_search(first.pk)
    assert [r.asset_id for r in SearchResult.objects.filter(search=first).order_by("rank")] == ids[:5]

    Asset.objects.filter(pk=ids[0]).update(library=other)
    blind, calls = feed.changes_since, []

    def missed_once(space, watermark):  # the first read after the change misses it
        changes = blind(space, watermark)
        calls.append(len(changes.asset_ids))
        if len(calls) == 1:
            return feed.Changes(changes.header, changes.asset_ids[:0], changes.library_ids[:0],
                                changes.live[:0], changes.vectors[:0])
        return changes

    monkeypatch.setattr(feed, "changes_since", missed_once)
    ranks = []
    real_rank = search_runner.rank
    monkeypatch.setattr(search_runner, "rank", lambda *a, **k: ranks.append(1) or real_rank(*a, **k))
    second = new_search(ann, text_only=True, top_n=5, libraries=[library])
    run_search(second.pk)
    second.refresh_from_db()
    assert len(ranks) == 2  # ranked again after the check
    assert [r.asset_id for r in SearchResult.objects.filter(search=second).order_by("rank")] == ids[1:6]
    assert second.result_count == 5


@pytest.mark.parametrize("how", [{"backend": "memory"}, {"exact": True}], ids=["memory", "pgvector"])
def test_a_scope_can_be_any_set_of_photos_the_database_selects(planted, library, how, product):
    """Filters (dates, camera, ...) arrive as a queryset of photos: both backends rank exactly
    the photos it selects, within the scope's libraries."""
    space, vectors, ids, other = planted
    Asset.objects.filter(pk__in=ids[::3]).update(taken_at=datetime(2021, 6, 1, tzinfo=dt_timezone.utc))
    scope = Scope((library.pk,), photos=Asset.objects.filter(taken_at__year=2021))
    u = query(7)
    rows = [r.asset_id for r in rank(space, u, scope, 50, **how).rows]
    selected = ids[::3]
    assert rows == brute_force(selected, vectors[::3], u, 50)
    assert rank(space, u, Scope((other.pk,), photos=Asset.objects.filter(taken_at__year=2021)), 50, **how).rows == []


def test_the_fast_pass_stays_within_its_error_bound(library, product):
    """The exact answers rest on |fast - exact| <= error for every photo; adversarial rows
    included (a large component beside many small ones: float16 sums would lose them)."""
    rng = np.random.default_rng(13)
    space = make_space("bound", 256, 256)
    vectors = np.concatenate([unit_rows(rng, 500, 256), unit_rows(rng, 500, 256)], axis=1)
    vectors[:5] = 0.01
    vectors[:5, 0] = 60.0
    # Each of its 1 + 2⁻⁹ rounds down in bfloat16 while the -1s stay: against a query of ones
    # the twin's product loses 256 × 2⁻⁹ = 0.5 of a score that is itself 0.5.
    vectors[5] = np.where(np.arange(512) % 2 == 0, 1 + 2.0 ** -9, -1.0)
    plant(space, library, vectors)
    queries = [np.random.default_rng(seed).standard_normal(512).astype(np.float32) for seed in range(5)]
    for u in [*queries, np.ones(512, dtype=np.float32)]:
        scores = memory.current_copy(space).scores(u, Scope((library.pk,)))
        ids, stored = scores.photos(np.arange(scores.size))
        exact = exact_parts(u, stored, 256).score.astype(np.float64)
        assert np.all(np.abs(scores.fast.numpy() - exact) <= scores.error), scores.error


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_search_worker_loads_its_copy_at_start_and_reports_it_on_healthz(start_worker, tiny_model_dir, media_root,
                                                                             ann, library, settings):
    """What each worker ranks with, and how much of a space it holds, is visible on /healthz
    (and in the admin) through the worker's heartbeat; its searches rank from that copy."""
    from django.test import Client

    from retrieval.indexing.spaces import space_for_profile
    from retrieval.search.tasks import queue_search
    from tests.conftest import wait_for

    settings.CLETIR_WORKER_HEARTBEAT_SECONDS = 2
    space = space_for_profile("tiny")
    EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True)
    rng = np.random.default_rng(4)
    ids = plant(space, library, np.concatenate([unit_rows(rng, 30, 32), unit_rows(rng, 30, 32)], axis=1))
    start_worker(queues="search", env={"CLETIR_RANK_BACKEND": "auto"})

    def reported():
        body = Client().get("/healthz").json()
        reports = [r for w in body["workers"] for r in w["ranking"].values() if r.get("copies")]
        return reports and reports[0]

    report = wait_for(reported, timeout=120, message="the worker's copy on /healthz")
    assert report["backends"][str(space.pk)]["backend"] == "memory"
    held = report["copies"][str(space.pk)]
    assert (held["photos"], held["device"], held["dtype"]) == (30, "cpu", "float16") and held["bytes"] > 30 * 64 * 2
    search = new_search(ann, text_only=True, top_n=10)
    queue_search(search)
    search = wait_for(lambda: (s := type(search).objects.get(pk=search.pk)).is_finished and s, timeout=120,
                      message="the search to finish")
    stored = list(SearchResult.objects.filter(search=search).values_list("asset_id", flat=True))
    assert search.status == "done" and len(stored) == 10 and set(stored) <= set(ids)
