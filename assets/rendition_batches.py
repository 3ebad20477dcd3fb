"""Renditions in batches: one task works through every photo waiting for them, not one task per photo.

Scheduling: `schedule_renditions()` is called after each stored photo (and by the sweep). It
sends a task only when none is queued: a QueuedTaskMark row, set by a conditional update when
the task is sent and cleared by the task when it starts. A photo stored after the task started
finds the mark cleared and queues the next task, so none is missed; a photo stored before
finds it set and is taken by the queued task, which reads the pending photos only after it
cleared the mark. A mark older than QUEUED_TASK_EXPIRY is taken as a lost message.

The task (`render_pending`) claims CLETIR_RENDITION_BATCH_SIZE pending photos at a time
(assets.renditions.claim_photos: a short transaction, no lock held afterwards), renders them in
CLETIR_RENDITION_THREADS threads (libvips and Pillow decode and resample outside the GIL; the
threads touch neither the database nor the media folder) and records each photo from the
task's own thread as soon as it is rendered. After CLETIR_RENDITION_TASK_SECONDS it stops at the
end of a batch and queues the rest as a new task, so the `default` queue's other work (archives,
the sweep) runs in between. Memory: at most one batch of decoded photos (one preview-sized
image per thread) and its encoded files.

Exactly once per photo: claims keep two workers (or a retry and a duplicate message) off one
photo, and the (asset, name) unique rows make a late duplicate a no-op.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import QueuedTaskMark
from .renditions import RenditionJob, claim_photos, finish_job, jobs_for, render_job

logger = logging.getLogger(__name__)

MARK = "renditions"
# A task queued this long ago and still not started is taken as lost (a broker restart, a purged
# queue): the next call queues another.
QUEUED_TASK_EXPIRY = timedelta(minutes=10)


@dataclass
class RenditionReport:
    made: int = 0  # photos that got renditions (or found them all made)
    failed: int = 0  # photos marked failed
    continued: bool = False  # stopped at the time limit with photos left: queued again

    def as_dict(self) -> dict:
        return asdict(self)


def schedule_renditions() -> bool:
    """Queue one rendition task unless one is queued already; returns whether one was sent.

    Never raises for a broker that is down: the mark is cleared again so the next stored photo
    (or the sweep) queues it.
    """
    from .tasks import render_pending_photos

    now = timezone.now()
    marks = QueuedTaskMark.objects.filter(name=MARK)
    sent = marks.filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - QUEUED_TASK_EXPIRY)).update(queued_at=now)
    if not sent:  # queued already, or the mark row does not exist yet (a fresh database)
        _, sent = QueuedTaskMark.objects.get_or_create(name=MARK, defaults={"queued_at": now})
    if not sent:
        return False
    try:
        render_pending_photos.delay()
    except Exception:
        logger.exception("could not queue renditions; they will be queued again later")
        marks.update(queued_at=None)
        return False
    return True


def task_started() -> None:
    """Clear the mark: from now on a stored photo queues the next task (this one may be past it)."""
    QueuedTaskMark.objects.filter(name=MARK).update(queued_at=None)


def render_pending(claim: str, seconds: float | None = None) -> RenditionReport:
    """Make the renditions of pending photos, batch by batch, for about `seconds`
    (CLETIR_RENDITION_TASK_SECONDS); `continued` says photos may be left."""
    seconds = settings.CLETIR_RENDITION_TASK_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    report = RenditionReport()
    with ThreadPoolExecutor(max_workers=max(1, settings.CLETIR_RENDITION_THREADS), thread_name_prefix="render") as pool:
        while True:
            jobs = jobs_for(claim_photos(claim, settings.CLETIR_RENDITION_BATCH_SIZE))
            if not jobs:
                return report
            futures: dict[Future, RenditionJob] = {pool.submit(render_job, job): job for job in jobs}
            for future in as_completed(futures):
                error = future.exception()
                if finish_job(futures[future], None if error else future.result(), error) is None:
                    report.failed += 1
                else:
                    report.made += 1
            if time.monotonic() >= deadline:
                report.continued = True
                return report
