"""Embedding photos into a space: claim a batch of pending photos, embed them, store the vectors.

Exactly once per (photo, space): the unique constraint on AssetEmbedding is the arbiter, rows
are claimed with `FOR UPDATE SKIP LOCKED` while a batch is embedded (two workers never embed
the same photo), and a batch's vectors are written in the same transaction that holds the
claim. A worker that dies mid-batch rolls its transaction back: those photos are simply
pending again for the next run. What builds on new vectors (smart albums) hears of them through
`signals.photos_indexed` once the batch has committed, so none of that work runs while the
batch's row locks are held.
"""
from __future__ import annotations

import logging
import math
from functools import partial

from django.db import transaction
from PIL import Image, ImageOps

from assets.imaging import to_rgb8
from assets.models import Asset
from retrieval.engine.fusion import photo_vectors

from ..models import AssetEmbedding, EmbeddingSpace, IndexingFailure
from .progress import pending_assets
from .signals import photos_indexed

logger = logging.getLogger(__name__)

# The encoders resize the shorter side to 224-256 px. Decoding a 12 MP JPEG at full size would
# be most of the time outside the forward passes, so photos are decoded (JPEG: libjpeg's DCT
# scaling) or box-reduced to a shorter side of at least this, never below it.
MIN_SHORT_SIDE = 256


def load_photo_for_embedding(path: str) -> Image.Image:
    """Decode a stored photo upright, in RGB, with its shorter side reduced towards
    MIN_SHORT_SIDE (whatever the aspect ratio: a panorama keeps the detail its crop needs)."""
    with Image.open(path) as image:
        scale = MIN_SHORT_SIDE / min(image.size)
        if image.format == "JPEG" and scale < 1:
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        # 8-bit RGB with the tones kept (a 16-bit grey is not clipped to white), before reducing:
        # Pillow reduces no 16-bit mode.
        upright = to_rgb8(ImageOps.exif_transpose(image))
        factor = min(upright.size) // MIN_SHORT_SIDE
        if factor >= 2:
            upright = upright.reduce(factor)  # a box filter: fast, no aliasing; encoders resize the rest
        return upright


def embed_batch(space: EmbeddingSpace, encoders, batch_size: int) -> tuple[int, int]:
    """Claim up to `batch_size` pending photos, embed them, store vectors and failures.

    Returns (indexed, failed); (0, 0) means nothing was left to claim.
    """
    with transaction.atomic():
        claimed = _claim(space, batch_size)
        if not claimed:
            return 0, 0
        images, ok, failures = [], [], []
        for asset in claimed:
            try:
                images.append(load_photo_for_embedding(asset.file.path))
                ok.append(asset)
            except Exception as exc:  # any decode problem is this photo's, not the batch's
                failures.append(IndexingFailure(asset=asset, space=space, error=f"{type(exc).__name__}: {exc}"[:2000]))
        if ok:
            vectors = photo_vectors(*encoders.encode_photos(images))
            AssetEmbedding.objects.bulk_create(
                [AssetEmbedding(asset=a, space=space, vector=v) for a, v in zip(ok, vectors)], ignore_conflicts=True
            )
            transaction.on_commit(partial(_announce_indexed, space.pk, [a.pk for a in ok]), robust=True)
        IndexingFailure.objects.bulk_create(failures, ignore_conflicts=True)
    for failure in failures:
        logger.warning("photo %s could not be indexed in %s: %s", failure.asset_id, space, failure.error)
    return len(ok), len(failures)


def _claim(space: EmbeddingSpace, batch_size: int) -> list[Asset]:
    """Lock up to `batch_size` pending photos that no other worker holds (inside a transaction).

    The claiming query judges "pending" by the snapshot it starts with: a photo that another
    worker embedded and committed while the query ran still looks pending to it, and that
    worker's lock is gone, so the row is locked again here. A second statement, whose snapshot
    is taken after the locks were granted, sees that worker's vector and drops the photo; nobody
    else can embed a photo while this transaction holds its lock.
    """
    while True:
        locked = list(
            pending_assets(space).select_for_update(skip_locked=True, of=("self",)).order_by("pk")[:batch_size]
        )
        if not locked:
            return []
        still_pending = set(pending_assets(space).filter(pk__in=[a.pk for a in locked]).values_list("pk", flat=True))
        claimed = [a for a in locked if a.pk in still_pending]
        if claimed:
            return claimed


def _announce_indexed(space_id: int, asset_ids: list[int]) -> None:
    for receiver, result in photos_indexed.send_robust(sender=EmbeddingSpace, space_id=space_id, asset_ids=asset_ids):
        if isinstance(result, Exception):
            logger.error("photos_indexed receiver %r failed for space %s", receiver, space_id, exc_info=result)
