"""The stale-work sweep: work whose worker died or whose message was lost is finished or redone.

Celery delivers a task again when its pool process dies (acks_late + reject_on_worker_lost), but
not when the whole worker dies (the filesystem broker has already dropped the message; Redis
gives it back only after its visibility timeout, an hour), nor when a broker loses a queue. The
rows tell what should be happening, so this sweep reads them and acts:

* searches not finished CLETIR_SEARCH_STALE_SECONDS after they were queued: one that no worker
  ever started is queued once more; any other is marked failed with a reason the user reads,
  so a search never stays "running" and the user can simply search again;
* the active space with photos waiting, no indexing task queued (or its mark expired) and no
  photo indexed for CLETIR_PHOTO_WORK_STALE_SECONDS: indexing is queued again;
* photos waiting for their renditions: `assets.sweeps.sweep_renditions` (assets' own rule,
  judged per photo);
* albums not yet re-derived in the serving space (`retrieval.albums.derive`) whose re-derivation
  was never queued, or was queued or failed CLETIR_SEARCH_STALE_SECONDS ago: queued again;
* the ranking change feed (`retrieval.search.ranking.feed`) forgets changes older than
  CLETIR_RANK_FEED_KEEP_SECONDS (a worker's copy idle for longer reloads).

Every action is a conditional update or an idempotent task, so two sweeps at once (the beat
task and `manage.py sweep_stale_work`) or a sweep racing a live worker do no harm.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from assets.sweeps import sweep_renditions

from .indexing.progress import pending_assets
from .albums.tasks import requeue_stale_derivations
from .indexing.spaces import active_space, serving_space
from .indexing.tasks import QUEUED_TASK_EXPIRY, schedule_indexing
from .models import AssetEmbedding, IndexingFailure, Search
from .search.ranking.feed import prune_changes
from .search.tasks import dispatch_waiting, send

logger = logging.getLogger(__name__)

WORKER_DIED = "The worker stopped while running this search; try again."
NEVER_PICKED_UP = "No worker picked this search up in time; try again."


@dataclass(frozen=True)
class SweepReport:
    searches_failed: int = 0
    searches_requeued: int = 0
    searches_dispatched: int = 0
    indexing_scheduled: int = 0
    renditions_requeued: int = 0
    albums_requeued: int = 0
    ranking_changes_pruned: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def sweep_stale_work(now: datetime | None = None) -> SweepReport:
    """Run every rule once; returns what was done (all zero when nothing was stale)."""
    now = now or timezone.now()
    failed, requeued = sweep_searches(now)
    report = SweepReport(
        searches_failed=failed,
        searches_requeued=requeued,
        searches_dispatched=sweep_waiting_searches(),
        indexing_scheduled=sweep_indexing(now),
        renditions_requeued=sweep_renditions(now),
        albums_requeued=requeue_stale_derivations(getattr(serving_space(), "pk", None), now),
        ranking_changes_pruned=prune_changes(settings.CLETIR_RANK_FEED_KEEP_SECONDS),
    )
    if any(v for k, v in report.as_dict().items() if k != "ranking_changes_pruned"):
        logger.warning("stale work swept: %s", report.as_dict())
    return report


def sweep_searches(now: datetime) -> tuple[int, int]:
    """(searches marked failed, searches queued again). Searches waiting behind their user's
    earlier ones are not stale: their clock starts when they are sent to the queue."""
    cutoff = now - timedelta(seconds=settings.CLETIR_SEARCH_STALE_SECONDS)
    # The clock restarts when a search is re-queued: its second message gets the full time.
    stale = Search.objects.unfinished().alias(
        queued_at=Coalesce("requeued_at", "dispatched_at")
    ).filter(queued_at__lt=cutoff)

    requeued = 0
    never_started = stale.filter(status=Search.Status.QUEUED, started_at__isnull=True, requeued_at__isnull=True)
    for search in never_started.select_related("user"):
        # The conditional update is the claim: a concurrent sweep re-queues nothing twice.
        if search.mark_requeued(now):
            send(search.pk)
            requeued += 1
            logger.warning("search %s was never started; queued again", search.pk)

    failed = 0
    for reason, rows in (
        (NEVER_PICKED_UP, stale.filter(status=Search.Status.QUEUED, started_at__isnull=True, requeued_at__isnull=False)),
        (WORKER_DIED, stale.filter(Q(started_at__isnull=False) | ~Q(status=Search.Status.QUEUED))),
    ):
        ids = list(rows.values_list("pk", flat=True))
        # Re-checked in the UPDATE: a search that finished meanwhile keeps its outcome.
        count = Search.objects.filter(pk__in=ids).fail(reason, now)
        if count:
            logger.warning("%d stale searches marked failed: %s (ids %s)", count, reason, ids)
        failed += count
    return failed, requeued


def sweep_waiting_searches() -> int:
    """Send waiting searches whose user has room in the queue (a worker that died, or a
    database outage, kept the run that ended from sending the next one); returns how many."""
    users = Search.objects.filter(status=Search.Status.QUEUED, dispatched_at__isnull=True).values_list(
        "user_id", flat=True).distinct()
    return sum(dispatch_waiting(user_id) for user_id in users)


def sweep_indexing(now: datetime) -> int:
    """1 when indexing of the active space was queued again, else 0."""
    space = active_space()
    if space is None or not pending_assets(space).exists():
        return 0
    if space.indexing_queued_at is not None and space.indexing_queued_at >= now - QUEUED_TASK_EXPIRY:
        return 0  # a task is queued and not yet started: it will index them
    # A running task clears the mark when it starts, so "running" shows only as progress: a
    # photo indexed (or failed) recently, or an activation whose task may still be loading its
    # models, means a worker is at it.
    quiet_since = now - timedelta(seconds=settings.CLETIR_PHOTO_WORK_STALE_SECONDS)
    last_activity = max(
        [t for t in (
            AssetEmbedding.objects.filter(space=space).aggregate(last=Max("created_at"))["last"],
            IndexingFailure.objects.filter(space=space).aggregate(last=Max("created_at"))["last"],
            space.activated_at,
        ) if t is not None],
        default=None,
    )
    if last_activity is not None and last_activity >= quiet_since:
        return 0
    if schedule_indexing(space):
        logger.warning("indexing of %s had stalled with photos pending; queued again", space)
        return 1
    return 0
