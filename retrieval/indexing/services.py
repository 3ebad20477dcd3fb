"""Indexing operations the admin, the commands and the pages start: activating a space and
re-indexing photos. Both change what is pending and queue the indexing task."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from assets.models import Asset

from ..models import AssetEmbedding, EmbeddingSpace, IndexingFailure
from .tasks import schedule_indexing


def activate_space(space: EmbeddingSpace) -> None:
    """Make `space` the one photos are indexed into, and start (re-)indexing every library.

    Search keeps reading the serving space until `space` holds every photo; the very first
    space serves at once, so a new site's libraries are searchable while they are indexed.
    """
    with transaction.atomic():
        # Row locks serialise two admins activating spaces at the same moment.
        list(EmbeddingSpace.objects.select_for_update().filter(Q(is_active=True) | Q(pk=space.pk)))
        space.refresh_from_db()
        if space.is_active:
            return
        EmbeddingSpace.objects.filter(is_active=True).update(is_active=False)
        space.is_active = True
        space.activated_at = timezone.now()
        space.completed_at = None
        space.is_serving = space.is_serving or not EmbeddingSpace.objects.filter(is_serving=True).exists()
        space.save(update_fields=["is_active", "activated_at", "completed_at", "is_serving"])
        transaction.on_commit(lambda: schedule_indexing(space))


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
