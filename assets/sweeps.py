"""Stale rendition work: photos still waiting for their renditions long after they were stored.

Judged per photo, never site-wide: a photo pending for more than CLETIR_PHOTO_WORK_STALE_SECONDS
that nobody holds a live claim on (never claimed, or claimed by a worker that died: the claim is
as old as that limit) means its task was lost: a message a broker dropped, a worker that died
outright, retries a long database outage used up. Thumbnails made for other photos meanwhile
say nothing about this one. One rendition task is queued for all of them
(assets.rendition_batches.schedule_renditions), and none while one is queued, so sweeping
often, or while no worker runs, piles up at most one message per QUEUED_TASK_EXPIRY.

The platform's periodic sweep (`retrieval.sweeper.sweep_stale_work`: the beat task and
`manage.py sweep_stale_work`) calls this, so a site keeps one sweep, one command and one report.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings

from .models import Asset
from .rendition_batches import schedule_renditions
from .renditions import unclaimed

logger = logging.getLogger(__name__)


def stalled_photos(now: datetime):
    """Photos waiting for renditions too long with no worker on them."""
    stale_since = now - timedelta(seconds=settings.CLETIR_PHOTO_WORK_STALE_SECONDS)
    return Asset.objects.filter(status=Asset.Status.PENDING, created_at__lt=stale_since).filter(unclaimed(now))


def sweep_renditions(now: datetime) -> int:
    """Queue the renditions of stalled photos again; returns how many photos it queued them for
    (0 when none had stalled or a task was queued already)."""
    count = stalled_photos(now).count()
    if count and schedule_renditions():
        logger.warning("%d photos were waiting for renditions with no worker on them; queued again", count)
        return count
    return 0
