"""Renditions in batches: one task for many photos, claims that keep workers (and retries) from
making a photo twice, time slices, the old per-photo task name, and retries that outlast an outage."""
from __future__ import annotations

import io
import os
import threading

import pytest
from celery.utils.time import get_exponential_backoff_interval
from django.db import OperationalError, connection
from django.utils import timezone

from assets import rendition_batches, renditions
from assets.ingest import ingest_file
from assets.models import Asset, QueuedTaskMark, Rendition
from assets.rendition_batches import render_pending, schedule_renditions
from assets.renditions import claim_photos, new_claim
from assets.services import delete_assets
from assets.tasks import make_renditions, render_pending_photos

from .conftest import image_bytes


@pytest.fixture
def queued(monkeypatch):
    """Rendition tasks sent to the broker (recorded, not run)."""
    sent = []
    monkeypatch.setattr(render_pending_photos, "delay", lambda: sent.append("render_pending_photos"))
    return sent


def store(library, count: int, start: int = 0) -> list[int]:
    return [ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(400, 300), seed=start + i)), f"p{start + i}.jpg").asset_id
            for i in range(count)]


def rendition_files(media_root):
    return sorted(p for p in (media_root / "renditions").rglob("*") if p.is_file())


@pytest.mark.django_db
def test_many_stored_photos_queue_one_task_and_the_next_after_it_starts(library, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        store(library, 5)
    assert queued == ["render_pending_photos"]  # not one task per photo

    rendition_batches.task_started()  # a worker took it: the next photo may be past its read
    with django_capture_on_commit_callbacks(execute=True):
        store(library, 2, start=5)
    assert queued == ["render_pending_photos"] * 2

    # A queued task whose message was lost (its mark expired) is queued again.
    QueuedTaskMark.objects.filter(name=rendition_batches.MARK).update(
        queued_at=timezone.now() - rendition_batches.QUEUED_TASK_EXPIRY - timezone.timedelta(seconds=1))
    assert schedule_renditions() is True and len(queued) == 3
    assert schedule_renditions() is False


@pytest.mark.django_db
def test_a_broker_that_is_down_leaves_the_mark_clear(library, monkeypatch):
    def down():
        raise ConnectionError("broker down")

    monkeypatch.setattr(render_pending_photos, "delay", down)
    assert schedule_renditions() is False
    assert QueuedTaskMark.objects.get(name=rendition_batches.MARK).queued_at is None


@pytest.mark.django_db
def test_the_task_works_through_every_pending_photo_in_batches_and_a_rerun_makes_nothing(
    library, media_root, settings, queued
):
    settings.CLETIR_RENDITION_BATCH_SIZE = 2
    ids = store(library, 5)
    QueuedTaskMark.objects.create(name=rendition_batches.MARK, queued_at=timezone.now())

    assert render_pending_photos.apply().get() == {"made": 5, "failed": 0, "continued": False}

    assert QueuedTaskMark.objects.get(name=rendition_batches.MARK).queued_at is None  # cleared at start
    assert set(Asset.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"ready"}
    assert Rendition.objects.count() == 10
    files = rendition_files(media_root)
    mtimes = [os.stat(p).st_mtime_ns for p in files]
    # A retry or a duplicate message finds nothing waiting and writes nothing.
    assert render_pending_photos.apply().get() == {"made": 0, "failed": 0, "continued": False}
    assert make_renditions.apply(args=[ids[0]]).get() == []
    assert rendition_files(media_root) == files and [os.stat(p).st_mtime_ns for p in files] == mtimes
    assert queued == []


@pytest.mark.django_db
def test_a_time_slice_ends_after_a_batch_and_queues_the_rest(library, settings, queued):
    settings.CLETIR_RENDITION_BATCH_SIZE = 2
    settings.CLETIR_RENDITION_TASK_SECONDS = 0
    store(library, 5)

    assert render_pending_photos.apply().get() == {"made": 2, "failed": 0, "continued": True}
    assert queued == ["render_pending_photos"]
    assert Asset.objects.filter(status="pending").count() == 3


@pytest.mark.django_db
def test_a_failed_photo_does_not_fail_the_batch(library, media_root):
    ids = store(library, 3)
    os.remove(Asset.objects.get(pk=ids[1]).file.path)

    assert render_pending(new_claim()).as_dict() == {"made": 2, "failed": 1, "continued": False}
    assert dict(Asset.objects.values_list("pk", "status")) == {ids[0]: "ready", ids[1]: "failed", ids[2]: "ready"}


@pytest.mark.django_db
def test_claims_keep_a_photo_to_one_worker_until_they_expire_and_a_retry_takes_its_own_back(library, settings):
    ids = store(library, 4)
    first, second = new_claim(), new_claim()

    assert claim_photos(first, limit=3) == ids[:3]
    assert claim_photos(second, limit=10) == ids[3:]  # the others are held
    assert claim_photos(second, limit=10) == ids[3:]
    # The first worker's task is retried after a database error: same claim, same photos.
    assert claim_photos(first, limit=10) == ids[:3]
    # A claim as old as the stale limit belongs to a worker that died: anyone may take it.
    Asset.objects.filter(pk__in=ids[:3]).update(
        renditions_claimed_at=timezone.now() - timezone.timedelta(seconds=settings.CLETIR_PHOTO_WORK_STALE_SECONDS + 1))
    assert claim_photos(second, limit=10) == ids
    # The old per-photo task does not touch a photo another worker holds.
    assert renditions.make_renditions(ids[0], claim=first) == []
    assert not Rendition.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_workers_claiming_at_once_share_the_photos_without_overlap(library, queued):
    ids = store(library, 40)
    claims: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        try:
            start.wait()
            claim = new_claim()
            claims[name] = []
            while batch := claim_photos(claim, limit=3):
                claims[name] += batch
                Asset.objects.filter(pk__in=batch).update(status=Asset.Status.READY)  # as recording does
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    taken = [pk for batch in claims.values() for pk in batch]
    assert sorted(taken) == ids  # every photo claimed, none twice


@pytest.mark.django_db
def test_a_photo_deleted_mid_batch_leaves_no_rows_and_no_files(library, media_root, monkeypatch):
    ids = store(library, 3)
    finish = renditions.finish_job

    def delete_then_finish(job, encoded, error):
        if job.asset_id == ids[1]:  # deleted (with the delete service) while its files were made
            delete_assets(Asset.objects.filter(pk=job.asset_id))
        return finish(job, encoded, error)

    monkeypatch.setattr(rendition_batches, "finish_job", delete_then_finish)
    assert render_pending(new_claim()).made == 3

    assert sorted(Rendition.objects.values_list("asset_id", flat=True).distinct()) == [ids[0], ids[2]]
    sha = {pk: Asset.objects.get(pk=pk).sha256 for pk in (ids[0], ids[2])}
    assert {p.name.split("-")[0] for p in rendition_files(media_root)} == set(sha.values())
    assert len(rendition_files(media_root)) == 4
    assert list((media_root / "incoming").iterdir()) == []


@pytest.mark.django_db
def test_a_database_error_mid_batch_is_retried_and_the_retry_finishes_the_claimed_photos(library, monkeypatch):
    ids = store(library, 3)
    claim = new_claim()
    record = renditions.record_renditions
    failures = iter([True])

    def record_once_failing(asset_id, encoded):
        if asset_id == ids[1] and next(failures, False):
            raise OperationalError("server closed the connection unexpectedly")
        return record(asset_id, encoded)

    monkeypatch.setattr(renditions, "record_renditions", record_once_failing)
    with pytest.raises(OperationalError):
        render_pending(claim)
    waiting = Asset.objects.filter(status="pending")
    assert list(waiting.values_list("pk", "renditions_claim")) != []
    assert set(waiting.values_list("renditions_claim", flat=True)) == {claim}  # still held, by this task
    assert claim_photos(new_claim(), limit=10) == []  # nobody else takes them meanwhile

    assert render_pending(claim).failed == 0  # the retry: same task id, same claim
    assert set(Asset.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"ready"}


def total_retry_seconds(task) -> float:
    return sum(
        get_exponential_backoff_interval(factor=task.retry_backoff, retries=n, maximum=task.retry_backoff_max, full_jitter=task.retry_jitter)
        for n in range(task.max_retries)
    )


def test_retries_outlast_minutes_of_database_outage():
    # Issue 18.5: a 45 s outage used up the old retries (5, about 31 s in all).
    for task in (render_pending_photos, make_renditions):
        assert OperationalError in task.autoretry_for
        assert task.retry_jitter is False  # the schedule is what it says
        assert total_retry_seconds(task) >= 10 * 60, task.name
        assert task.retry_backoff_max <= 60  # a restarted database is noticed within a minute
        assert task.acks_late
