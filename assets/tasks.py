"""Celery tasks of `assets`, on the `default` (CPU) queue: names outside `retrieval.tasks.search.*`
and `retrieval.tasks.embed.*` route there (cletir_site.celery)."""
from __future__ import annotations

from celery import shared_task

from . import media, renditions


@shared_task(
    name="assets.tasks.make_renditions",
    autoretry_for=renditions.TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def make_renditions(asset_id: int) -> list[str]:
    """Make the photo's missing thumbnails; a no-op when they exist (retries, duplicates)."""
    return renditions.make_renditions(asset_id)


@shared_task(name="assets.tasks.sweep_media_leftovers")
def sweep_media_leftovers() -> dict[str, int]:
    """Remove what killed uploads and deletes left: temporary files and PendingFiles older than
    CLETIR_MEDIA_GRACE_SECONDS (celery beat sends this every CLETIR_MEDIA_SWEEP_INTERVAL_SECONDS)."""
    return media.sweep_leftovers()
