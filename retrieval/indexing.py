"""Photo indexing: which photos still need a vector in a space, and embedding them in batches.

Exactly once per (photo, space): the unique constraint on AssetEmbedding is the arbiter, rows
are claimed with `FOR UPDATE SKIP LOCKED` while a batch is embedded (two workers never embed
the same photo), and a batch's vectors are written in the same transaction that holds the
claim. A worker that dies mid-batch rolls its transaction back: those photos are simply
pending again for the next run.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from PIL import Image, ImageOps

from assets.imaging import to_rgb8
from assets.models import Asset, Library

from .models import AssetEmbedding, EmbeddingSpace, IndexingFailure

logger = logging.getLogger(__name__)

# A queued indexing task that has not started after this long is assumed lost (a broker
# restart, a purged queue) and may be queued again.
QUEUED_TASK_EXPIRY = timedelta(minutes=10)
# The encoders resize the shorter side to 224-256 px. Decoding a 12 MP JPEG at full size would
# be most of the time outside the forward passes, so photos are decoded (JPEG: libjpeg's DCT
# scaling) or box-reduced to a shorter side of at least this, never below it.
MIN_SHORT_SIDE = 256


def _has_embedding(space: EmbeddingSpace):
    return Exists(AssetEmbedding.objects.filter(asset=OuterRef("pk"), space=space))


def _has_failure(space: EmbeddingSpace):
    return Exists(IndexingFailure.objects.filter(asset=OuterRef("pk"), space=space))


def indexable_assets() -> QuerySet[Asset]:
    """Photos that should have a vector: everything stored that did not fail ingestion."""
    return Asset.objects.exclude(status=Asset.Status.FAILED)


def pending_assets(space: EmbeddingSpace) -> QuerySet[Asset]:
    return indexable_assets().filter(~_has_embedding(space), ~_has_failure(space))


@dataclass(frozen=True)
class IndexProgress:
    total: int
    indexed: int
    failed: int

    @property
    def pending(self) -> int:
        return self.total - self.indexed - self.failed

    @property
    def percent(self) -> int:
        done = self.indexed + self.failed
        return 100 if self.total == 0 else int(100 * done / self.total)

    def as_dict(self) -> dict:
        return {"total": self.total, "indexed": self.indexed, "pending": self.pending,
                "failed": self.failed, "percent": self.percent}


def index_progress(space: EmbeddingSpace | None, libraries: QuerySet[Library] | None = None) -> IndexProgress:
    """Counts of a space over some libraries (all when None), in one query."""
    assets = indexable_assets()
    if libraries is not None:
        assets = assets.filter(library__in=libraries)
    if space is None:
        return IndexProgress(total=assets.count(), indexed=0, failed=0)
    counts = assets.annotate(_indexed=_has_embedding(space), _failed=_has_failure(space)).aggregate(
        total=Count("pk"), indexed=Count("pk", filter=Q(_indexed=True)), failed=Count("pk", filter=Q(_failed=True, _indexed=False))
    )
    return IndexProgress(**counts)


def progress_by_library(space: EmbeddingSpace | None, libraries: QuerySet[Library]) -> dict[int, IndexProgress]:
    """Per-library counts for a list page, in one grouped query."""
    assets = indexable_assets().filter(library__in=libraries)
    if space is None:
        rows = assets.values("library_id").annotate(total=Count("pk"))
        return {r["library_id"]: IndexProgress(total=r["total"], indexed=0, failed=0) for r in rows}
    rows = (
        assets.annotate(_indexed=_has_embedding(space), _failed=_has_failure(space))
        .values("library_id")
        .annotate(total=Count("pk"), indexed=Count("pk", filter=Q(_indexed=True)),
                  failed=Count("pk", filter=Q(_failed=True, _indexed=False)))
    )
    return {r["library_id"]: IndexProgress(total=r["total"], indexed=r["indexed"], failed=r["failed"]) for r in rows}


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
    from retrieval.engine.fusion import photo_vectors

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
            from .albums import add_indexed_photos

            add_indexed_photos(space, ok, vectors)  # smart albums take new photos above their cutoff
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


def schedule_indexing(space: EmbeddingSpace | None) -> bool:
    """Queue one indexing task for the space unless one is queued already. Never raises.

    Returns whether a task was sent. With the broker down the mark is cleared again, so the
    next upload (or the sweeper) queues it.
    """
    if space is None:
        return False
    from .tasks.embed import index_space

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


def reindex(space: EmbeddingSpace, assets: QuerySet[Asset]) -> int:
    """Drop the vectors and failures of some photos in a space and queue them again."""
    ids = list(assets.values_list("pk", flat=True))
    with transaction.atomic():
        AssetEmbedding.objects.filter(space=space, asset_id__in=ids).delete()
        IndexingFailure.objects.filter(space=space, asset_id__in=ids).delete()
        if space.is_active:
            EmbeddingSpace.objects.filter(pk=space.pk).update(completed_at=None)
        transaction.on_commit(lambda: schedule_indexing(space))
    return len(ids)
