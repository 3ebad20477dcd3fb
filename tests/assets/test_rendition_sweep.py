"""The rendition sweep judges each photo: one stuck photo is rescued even while others get theirs."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from assets import rendition_batches
from assets.models import Asset, QueuedTaskMark, Rendition
from assets.sweeps import stalled_photos, sweep_renditions
from assets.tasks import render_pending_photos

pytestmark = pytest.mark.django_db

STALE = 600


@pytest.fixture(autouse=True)
def stale_limit(settings):
    settings.CLETIR_PHOTO_WORK_STALE_SECONDS = STALE


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(render_pending_photos, "delay", lambda: sent.append("render_pending_photos"))
    return sent


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def photo(library, index: int, status=Asset.Status.PENDING, age: float = 0, claimed: float | None = None) -> Asset:
    asset = Asset.objects.create(library=library, file=f"x/{index}.jpg", sha256=f"{index:064x}", status=status)
    Asset.objects.filter(pk=asset.pk).update(
        created_at=ago(age),
        renditions_claim="" if claimed is None else "task-1",
        renditions_claimed_at=None if claimed is None else ago(claimed),
    )
    return asset


def test_a_stuck_photo_is_rescued_although_other_photos_got_thumbnails_just_now(library, queued):
    # Issue 18.5: retries used up by a database outage left photos pending with no task; the old
    # site-wide rule saw another photo's fresh thumbnail and did nothing, for good.
    stuck = photo(library, 1, age=STALE + 5)
    busy = photo(library, 2, status=Asset.Status.READY, age=30)
    Rendition.objects.create(asset=busy, name="thumb", file="r/2.webp", width=1, height=1)

    assert list(stalled_photos(timezone.now())) == [stuck]
    assert sweep_renditions(timezone.now()) == 1
    assert queued == ["render_pending_photos"]


def test_which_photos_count_as_stalled(library):
    stalled = [
        photo(library, 1, age=STALE + 5),  # never claimed
        photo(library, 2, age=STALE * 3, claimed=STALE + 5),  # its worker died (claim expired)
    ]
    photo(library, 3, age=30)  # just stored: its task is on the way
    photo(library, 4, age=STALE * 3, claimed=30)  # a worker is at it now
    photo(library, 5, status=Asset.Status.READY, age=STALE + 5)
    photo(library, 6, status=Asset.Status.FAILED, age=STALE + 5)

    assert sorted(stalled_photos(timezone.now()), key=lambda a: a.pk) == stalled


def test_one_task_for_all_and_none_while_one_is_queued(library, queued):
    for i in range(3):
        photo(library, i, age=STALE + 5)

    assert sweep_renditions(timezone.now()) == 3
    assert sweep_renditions(timezone.now()) == 0  # queued, not started yet: nothing more
    assert queued == ["render_pending_photos"]

    # The task started and then its worker died outright: once the mark is cleared, the next
    # sweep queues it again.
    rendition_batches.task_started()
    assert sweep_renditions(timezone.now()) == 3
    assert queued == ["render_pending_photos"] * 2
    assert QueuedTaskMark.objects.get(name=rendition_batches.MARK).queued_at is not None


def test_nothing_stalled_nothing_queued(library, queued):
    photo(library, 1, age=30)
    assert sweep_renditions(timezone.now()) == 0
    assert queued == []


def test_the_swept_task_makes_the_stuck_photos_renditions(library, media_root):
    # End to end, without a broker: the sweep queues the task (eager), the task makes them.
    import io

    from assets.ingest import ingest_file

    from .conftest import image_bytes

    asset_id = ingest_file(library, io.BytesIO(image_bytes("JPEG", size=(400, 300))), "a.jpg").asset_id
    Asset.objects.filter(pk=asset_id).update(created_at=ago(STALE + 5), renditions_claim="dead-task",
                                             renditions_claimed_at=ago(STALE + 5))

    assert sweep_renditions(timezone.now()) == 1
    asset = Asset.objects.get(pk=asset_id)
    assert asset.status == "ready" and asset.renditions.count() == 2
