"""`default` queue: smart albums take newly indexed photos, and the one place that queues it.

Scoring runs here, apart from indexing: the embedding batch has committed and released its row
locks before any album is looked at, and a CPU worker does the work while the GPU embeds the
next batch.
"""
from __future__ import annotations

import logging

import numpy as np
from celery import shared_task
from django.db import InterfaceError, OperationalError

from assets.models import Asset

from ..models import Album, AssetEmbedding, EmbeddingSpace
from .albums import add_indexed_photos

logger = logging.getLogger(__name__)


@shared_task(name="retrieval.tasks.albums.score_indexed_photos", acks_late=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60, max_retries=20)
def score_indexed_photos(space_id: int, asset_ids: list[int]) -> dict:
    """Score photos indexed into a space against its albums (their stored vectors, as the
    database holds them). Idempotent: a second run changes nothing."""
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None:
        return {"space": space_id, "added": 0}
    stored = dict(AssetEmbedding.objects.filter(space=space, asset_id__in=asset_ids).values_list("asset_id", "vector"))
    assets = list(Asset.objects.filter(pk__in=list(stored)).order_by("pk"))
    if not assets:
        return {"space": space_id, "added": 0}
    vectors = np.stack([np.asarray(stored[a.pk], dtype=np.float32) for a in assets])
    return {"space": space_id, "added": add_indexed_photos(space, assets, vectors)}


def queue_album_scoring(space_id: int, asset_ids: list[int]) -> None:
    """Queue the scoring of newly indexed photos when the space has albums (most sites index
    far more often than they save albums: no task then)."""
    if not Album.objects.filter(space_id=space_id).exists():
        return
    try:
        score_indexed_photos.delay(space_id, list(asset_ids))
    except Exception:
        logger.exception("could not queue album scoring of %d photos in space %s", len(asset_ids), space_id)
