"""Celery tasks of `assets`, on the `default` (CPU) queue: names outside `retrieval.tasks.search.*`
and `retrieval.tasks.embed.*` route there (cletir_site.celery).

Database errors are retried with backoff 2, 4, 8, ... s, capped at a minute, 20 times: about a
quarter of an hour, so a database restart or a few minutes of outage end with the work done.
Retries keep the task's id, which is its claim on the photos it holds (assets.renditions), so a
retry takes those photos back at once. Anything that outlasts the retries is queued again by
the sweep (assets.sweeps).
"""
from __future__ import annotations

from celery import shared_task

from . import media, rendition_batches, renditions

RETRY_POLICY = {
    "autoretry_for": renditions.TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": False,
    "max_retries": 20,
}


@shared_task(name="assets.tasks.render_pending_photos", bind=True, acks_late=True, **RETRY_POLICY)
def render_pending_photos(self) -> dict:
    """Make the renditions of the photos waiting for them, in batches, for at most
    CLETIR_RENDITION_TASK_SECONDS; then queue the rest as a new task. Idempotent: a second run
    (a retry, a duplicate) finds nothing waiting."""
    rendition_batches.task_started()
    report = rendition_batches.render_pending(self.request.id or renditions.new_claim())
    if report.continued:
        rendition_batches.schedule_renditions()
    return report.as_dict()


@shared_task(name="assets.tasks.make_renditions", bind=True, acks_late=True, **RETRY_POLICY)
def make_renditions(self, asset_id: int) -> list[str]:
    """One photo's missing renditions (the task of releases that queued one task per photo,
    kept so that their messages still queued at an upgrade do their work). A no-op when the
    renditions exist or another worker is making them."""
    return renditions.make_renditions(asset_id, claim=self.request.id)


@shared_task(name="assets.tasks.sweep_media_leftovers")
def sweep_media_leftovers() -> dict[str, int]:
    """Remove what killed uploads and deletes left: temporary files and PendingFiles older than
    CLETIR_MEDIA_GRACE_SECONDS (celery beat sends this every CLETIR_MEDIA_SWEEP_INTERVAL_SECONDS)."""
    return media.sweep_leftovers()
