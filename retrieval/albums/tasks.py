"""Album tasks, and the one place that queues them: smart albums take newly indexed photos
(`default` queue), and albums are re-derived in a newly serving space (`embed` queue).

Scoring runs apart from indexing: the embedding batch has committed and released its row locks
before any album is looked at, and a CPU worker does the work while the GPU embeds the next
batch. Re-deriving encodes text and examples and may generate proxies, so it runs on the GPU's
bulk queue, never in front of a search.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from ..models import Album, EmbeddingSpace
from .albums import score_stored_photos
from .derive import DerivationFailed, rederive

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)


@shared_task(name="retrieval.tasks.albums.score_indexed_photos", acks_late=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, max_retries=20)
def score_indexed_photos(space_id: int, asset_ids: list[int]) -> dict:
    """Score photos indexed into a space against its albums (their stored vectors, as the
    database holds them). Idempotent: a second run changes nothing."""
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None:
        return {"space": space_id, "added": 0}
    return {"space": space_id, "added": score_stored_photos(space, asset_ids)}


def queue_album_scoring(space_id: int, asset_ids: list[int]) -> None:
    """Queue the scoring of newly indexed photos when the space has albums (most sites index
    far more often than they save albums: no task then)."""
    if not Album.objects.filter(space_id=space_id).exists():
        return
    try:
        score_indexed_photos.delay(space_id, list(asset_ids))
    except Exception:
        logger.exception("could not queue album scoring of %d photos in space %s", len(asset_ids), space_id)


@shared_task(name="retrieval.tasks.embed.rederive_album", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, max_retries=20)
def rederive_album(album_id: int) -> dict:
    """Re-derive an album in the serving space (`derive.rederive`). A failure other than the
    database going away is recorded on the album with its reason (the sweeper queues it again
    later); the album keeps its photos."""
    try:
        outcome = rederive(album_id)
    except TRANSIENT_ERRORS:
        raise
    except DerivationFailed as exc:
        _record_failure(album_id, str(exc))
        outcome = "failed"
    except Exception as exc:
        logger.exception("album %s could not be re-derived", album_id)
        _record_failure(album_id, f"{type(exc).__name__}: {exc}")
        outcome = "failed"
    return {"album": album_id, "outcome": outcome}


def _record_failure(album_id: int, reason: str) -> None:
    Album.objects.filter(pk=album_id).update(derivation=Album.Derivation.FAILED, derivation_error=reason[:2000])


def queue_rederivation(space_id: int, now: datetime | None = None) -> int:
    """Mark every album of another space "updating" and queue its re-derivation in `space_id`
    (now serving); albums already there are current. Returns how many were queued."""
    now = now or timezone.now()
    Album.objects.filter(space_id=space_id).exclude(derivation=Album.Derivation.CURRENT).update(
        derivation=Album.Derivation.CURRENT, derivation_error="")
    waiting = Album.objects.exclude(space_id=space_id)
    ids = list(waiting.values_list("pk", flat=True))
    waiting.update(derivation=Album.Derivation.UPDATING, derivation_error="", derivation_queued_at=now)
    return sum(_send(pk) for pk in ids)


def requeue_stale_derivations(serving_space_id: int | None, now: datetime) -> int:
    """The sweeper's rule: an album not in the serving space whose re-derivation was never
    queued, or queued (or failed) longer than CLETIR_SEARCH_STALE_SECONDS ago, is queued again;
    the conditional update is the claim, so two sweeps queue it once."""
    if serving_space_id is None:
        return 0
    stale = now - timedelta(seconds=settings.CLETIR_SEARCH_STALE_SECONDS)
    waiting = Album.objects.exclude(space_id=serving_space_id).filter(
        Q(derivation_queued_at__isnull=True) | Q(derivation_queued_at__lt=stale))
    queued = 0
    for pk, queued_at in waiting.values_list("pk", "derivation_queued_at"):
        claimed = Album.objects.filter(pk=pk, derivation_queued_at=queued_at).update(
            derivation_queued_at=now, **({} if queued_at else {"derivation": Album.Derivation.UPDATING}))
        if claimed:
            queued += _send(pk)
    return queued


def _send(album_id: int) -> int:
    try:
        rederive_album.delay(album_id)
    except Exception:
        logger.exception("could not queue the re-derivation of album %s; the sweeper queues it later", album_id)
        return 0
    return 1
