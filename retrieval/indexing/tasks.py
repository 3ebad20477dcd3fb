"""`embed` queue: bulk photo embedding into an embedding space, and the one place that queues it.

The task's name is explicit and kept from the layout before `retrieval/indexing/` existed
(`retrieval.tasks.embed.index_space`), so messages queued before an upgrade still run, and the
name routes the task to the `embed` queue (cletir_site.celery).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from ..models import EmbeddingSpace
from . import claims
from .photos import index_pending_photos
from .spaces import encoders_for, switch_serving_if_complete
from .vector_index import ensure_space_index

logger = logging.getLogger(__name__)

# A database restart or failover drops the connection mid-batch: the batch rolls back and the
# task runs again once the database is back (backoff 2, 4, 8, ... s, capped at a minute, for a
# quarter of an hour at least). Other errors are not retried: the stale-work sweeper queues
# indexing again if photos stay pending.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# A queued indexing task that has not started after this long is assumed lost (a broker
# restart, a purged queue) and may be queued again.
QUEUED_TASK_EXPIRY = timedelta(minutes=10)


# Photos per batch (claimed, decoded and embedded together) when CLETIR_INDEX_BATCH_SIZE is not
# set: a GPU's forward passes only reach their throughput in large batches; on a CPU a larger
# batch gains nothing and holds more photos per claim.
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 32}


def index_batch_size(device) -> int:
    """CLETIR_INDEX_BATCH_SIZE, or the default for the encoders' device."""
    return settings.CLETIR_INDEX_BATCH_SIZE or DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cpu"])


@shared_task(
    name="retrieval.tasks.embed.index_space", bind=True, acks_late=True, autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2, retry_backoff_max=60, retry_jitter=False, max_retries=20,
)
def index_space(self, space_id: int) -> dict:
    """Embed pending photos into the space (retrieval.indexing.photos), for at most
    CLETIR_INDEX_TASK_SECONDS; then queue the rest as a new task, or, when nothing is left,
    build the space's vector index if it has none yet and switch search to the space if it is
    complete. Idempotent: a second run (a retry, a duplicate) finds nothing pending.

    Time-sliced because one GPU worker often serves both `search` and `embed`: a 100,000-photo
    backfill as one task would hold the process for hours and every search would wait behind
    it; between slices the worker takes the next message, a waiting search included.
    """
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None:
        return {"space": space_id, "indexed": 0, "failed": 0, "skipped": "space deleted"}
    # From here on, a new upload must queue another run: this one may already be past it.
    EmbeddingSpace.objects.filter(pk=space_id).update(indexing_queued_at=None)
    encoders = encoders_for(space)
    lease = claims.Lease.new(self.request.id)
    taken_back = claims.take_back(space, lease)
    if taken_back:
        logger.warning("an earlier delivery of this task died with %d photos of %s claimed; indexing them one by one",
                       taken_back, space)
    run = index_pending_photos(
        space, encoders, lease, batch_size=index_batch_size(encoders.device), prefetch=settings.CLETIR_INDEX_PREFETCH,
        threads=settings.CLETIR_INDEX_DECODE_THREADS, deadline=time.monotonic() + settings.CLETIR_INDEX_TASK_SECONDS,
    )
    if not run.finished:
        schedule_indexing(space)  # the rest, behind whatever else is queued now
        logger.info("indexed %d photos into %s (%d failed); continuing in a new task", run.indexed, space, run.failed)
        return {"space": space_id, "indexed": run.indexed, "failed": run.failed, "continued": True}
    # Built once the backfill is done rather than kept up row by row during it: an HNSW insert
    # costs about a hundred times a vector's write (vector_index); search switches after it.
    ensure_space_index(space)
    switch_serving_if_complete(space)
    logger.info("indexed %d photos into %s (%d failed)", run.indexed, space, run.failed)
    return {"space": space_id, "indexed": run.indexed, "failed": run.failed}


def schedule_indexing(space: EmbeddingSpace | None) -> bool:
    """Queue one indexing task for the space unless one is queued already. Never raises.

    Returns whether a task was sent. With the broker down the mark is cleared again, so the
    next upload (or the sweeper) queues it.
    """
    if space is None:
        return False
    now = timezone.now()
    claimed = EmbeddingSpace.objects.filter(pk=space.pk).filter(
        Q(indexing_queued_at__isnull=True) | Q(indexing_queued_at__lt=now - QUEUED_TASK_EXPIRY)
    ).update(indexing_queued_at=now)
    if not claimed:
        return False
    try:
        index_space.delay(space.pk)
    except Exception:
        logger.exception("could not queue indexing of %s; it will be queued again later", space)
        EmbeddingSpace.objects.filter(pk=space.pk).update(indexing_queued_at=None)
        return False
    return True
