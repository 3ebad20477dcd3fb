"""The stale-work sweep: dead searches fail with a reason, lost work is queued again, once."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from assets.models import Asset
from retrieval import sweeper
from retrieval.models import AssetEmbedding, EmbeddingSpace, Search
from retrieval.sweeper import NEVER_PICKED_UP, WORKER_DIED, SweepReport, sweep_stale_work
from retrieval.indexing.tasks import index_space
from retrieval.search.tasks import run_search
from retrieval.workers import record_heartbeat

pytestmark = pytest.mark.django_db

STALE = 600


@pytest.fixture(autouse=True)
def limits(settings):
    settings.CLETIR_SEARCH_STALE_SECONDS = STALE
    settings.CLETIR_PHOTO_WORK_STALE_SECONDS = STALE


@pytest.fixture
def sent(monkeypatch):
    """What the sweep queues, by task, instead of sending it to a broker."""
    from assets.tasks import render_pending_photos

    record = {"search": [], "index": [], "renditions": []}
    monkeypatch.setattr(run_search, "delay", lambda pk: record["search"].append(pk))
    monkeypatch.setattr(index_space, "delay", lambda pk: record["index"].append(pk))
    monkeypatch.setattr(render_pending_photos, "delay", lambda: record["renditions"].append("render_pending_photos"))
    return record


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def search(user, status: str, age: float, started: bool = False, **fields) -> Search:
    row = Search.objects.create(user=user, text="sailboat", k=4, status=status, **fields)
    # created_at is auto_now_add: the age is set afterwards.
    Search.objects.filter(pk=row.pk).update(created_at=ago(age), dispatched_at=ago(age),
                                            started_at=ago(age - 1) if started else None)
    return row


def photo(library, index: int, status=Asset.Status.READY, age: float = 0) -> Asset:
    asset = Asset.objects.create(library=library, file=f"x/{index}.jpg", sha256=f"{index:064x}", status=status)
    Asset.objects.filter(pk=asset.pk).update(created_at=ago(age))
    return asset


def active_space(**fields) -> EmbeddingSpace:
    return EmbeddingSpace.objects.create(
        name="tiny", profile="tiny", vlm_model="v", vision_model="d", generator_model="g", vlm_dim=2, vision_dim=2,
        fingerprint="f" * 64, is_active=True, is_serving=True, **fields,
    )


def states(*searches: Search) -> list[tuple[str, str]]:
    return [tuple(Search.objects.values_list("status", "error").get(pk=s.pk)) for s in searches]


def test_searches_whose_worker_died_fail_with_the_reason_and_live_ones_are_left_alone(ann, sent):
    generating = search(ann, Search.Status.GENERATING, STALE + 5, started=True)
    ranking = search(ann, Search.Status.RANKING, STALE + 5, started=True)
    running_now = search(ann, Search.Status.GENERATING, STALE - 30, started=True)
    queued_now = search(ann, Search.Status.QUEUED, STALE - 30)
    done = search(ann, Search.Status.DONE, STALE * 10, started=True)
    failed = search(ann, Search.Status.FAILED, STALE * 10, started=True, error="Ranking the photos failed: x")

    report = sweep_stale_work()

    assert report == SweepReport(searches_failed=2)
    assert states(generating, ranking, running_now, queued_now, done, failed) == [
        ("failed", WORKER_DIED), ("failed", WORKER_DIED), ("generating", ""), ("queued", ""), ("done", ""),
        ("failed", "Ranking the photos failed: x"),
    ]
    generating.refresh_from_db()
    assert generating.finished_at is not None
    assert sweep_stale_work() == SweepReport()  # idempotent
    assert sent == {"search": [], "index": [], "renditions": []}


def test_a_search_no_worker_started_is_queued_again_once_then_failed(ann, sent):
    lost = search(ann, Search.Status.QUEUED, STALE + 5)

    assert sweep_stale_work() == SweepReport(searches_requeued=1)
    assert sweep_stale_work() == SweepReport()  # its second message now has the full time
    lost.refresh_from_db()
    assert (lost.status, lost.requeued_at is not None, sent["search"]) == ("queued", True, [lost.pk])

    later = timezone.now() + timedelta(seconds=STALE + 5)
    assert sweep_stale_work(now=later) == SweepReport(searches_failed=1)
    assert states(lost) == [("failed", NEVER_PICKED_UP)]
    assert sent["search"] == [lost.pk]  # never a third message


def test_a_requeued_search_that_then_started_and_died_fails_as_a_dead_worker(ann, sent):
    restarted = search(ann, Search.Status.GENERATING, STALE * 3, started=True)
    Search.objects.filter(pk=restarted.pk).update(requeued_at=ago(STALE - 30))

    assert sweep_stale_work() == SweepReport()  # the clock restarted at the re-queue
    assert sweep_stale_work(now=timezone.now() + timedelta(seconds=60)) == SweepReport(searches_failed=1)
    assert states(restarted) == [("failed", WORKER_DIED)]


def test_a_message_delivered_again_after_the_sweep_does_not_revive_a_failed_search(ann, monkeypatch):
    from retrieval.search import runner as search_runner

    dead = search(ann, Search.Status.GENERATING, STALE + 5, started=True)
    sweep_stale_work()
    monkeypatch.setattr(search_runner, "execute", lambda s, **kw: pytest.fail("a failed search ran again"))

    assert run_search(dead.pk) == {"search": dead.pk, "status": "failed"}
    assert states(dead) == [("failed", WORKER_DIED)]


def test_stalled_indexing_is_queued_again_unless_a_task_is_queued_or_making_progress(library, sent):
    space = active_space(activated_at=ago(STALE * 2))
    indexed, pending = photo(library, 1), photo(library, 2)
    AssetEmbedding.objects.create(asset=indexed, space=space, vector=[0.5, 0.5, 0.5, 0.5])
    AssetEmbedding.objects.filter(asset=indexed).update(created_at=ago(STALE + 5))

    assert sweep_stale_work() == SweepReport(indexing_scheduled=1)
    space.refresh_from_db()
    assert space.indexing_queued_at is not None and sent["index"] == [space.pk]
    assert sweep_stale_work() == SweepReport()  # the queued task will do it

    # The queued mark expired (the message was lost): queued again.
    EmbeddingSpace.objects.filter(pk=space.pk).update(indexing_queued_at=ago(11 * 60))
    assert sweep_stale_work() == SweepReport(indexing_scheduled=1)
    assert sent["index"] == [space.pk, space.pk]

    # A running task (mark cleared, a vector written a moment ago) is left to finish.
    EmbeddingSpace.objects.filter(pk=space.pk).update(indexing_queued_at=None)
    AssetEmbedding.objects.filter(asset=indexed).update(created_at=ago(5))
    assert sweep_stale_work() == SweepReport()

    # Nothing pending: nothing to do, however quiet.
    AssetEmbedding.objects.filter(asset=indexed).update(created_at=ago(STALE + 5))
    AssetEmbedding.objects.create(asset=pending, space=space, vector=[0.5, 0.5, 0.5, 0.5])
    AssetEmbedding.objects.filter(asset=pending).update(created_at=ago(STALE + 5))
    assert sweep_stale_work() == SweepReport()
    assert sent["index"] == [space.pk, space.pk]


def test_a_space_activated_a_moment_ago_is_loading_its_models_not_stalled(library, sent):
    active_space(activated_at=ago(30))
    photo(library, 1)

    assert sweep_stale_work() == SweepReport()


def test_the_sweep_includes_the_rendition_rule_of_assets(library, sent):
    # The rule itself is tested in tests/assets/test_rendition_sweep.py.
    photo(library, 1, status=Asset.Status.PENDING, age=STALE + 5)

    assert sweep_stale_work() == SweepReport(renditions_requeued=1)
    assert sent["renditions"] == ["render_pending_photos"]
    assert sweep_stale_work() == SweepReport()  # its task is queued


def test_the_command_the_task_and_the_beat_schedule(ann, sent):
    from cletir_site.celery import app
    from retrieval.tasks import sweep_stale_work as sweep_task

    search(ann, Search.Status.RANKING, STALE + 5, started=True)
    out = StringIO()
    call_command("sweep_stale_work", stdout=out)
    assert out.getvalue() == ("searches_failed=1 searches_requeued=0 searches_dispatched=0 indexing_scheduled=0 "
                              "renditions_requeued=0 albums_requeued=0 ranking_changes_pruned=0\n")
    assert sweep_task() == {"searches_failed": 0, "searches_requeued": 0, "searches_dispatched": 0, "indexing_scheduled": 0,
                            "renditions_requeued": 0, "albums_requeued": 0, "ranking_changes_pruned": 0}

    entry = app.conf.beat_schedule["sweep-stale-work"]
    assert (entry["task"], entry["schedule"], entry["options"]) == (sweep_task.name, 60.0, {"expires": 60.0})
    assert app.amqp.router.route({}, sweep_task.name)["queue"].name == "default"


def test_a_sweep_logs_what_it_did(ann, sent, caplog):
    search(ann, Search.Status.GENERATING, STALE + 5, started=True)
    with caplog.at_level("WARNING", logger=sweeper.logger.name):
        sweep_stale_work()
    assert "stale work swept: {'searches_failed': 1, 'searches_requeued': 0" in caplog.text
