"""Operations on spaces that the admin, the commands and the pages start: activating a space and
re-indexing photos (both change what is pending and queue the indexing task), and giving a
space its aggregation network."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
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


def use_aggregator(space: EmbeddingSpace, net, metadata: dict[str, str], origin: str = "") -> Path:
    """Save an aggregation network under MEDIA_ROOT/aggregators/ and make it `space`'s.

    A new file name each time (`origin` tells where the network came from): a search worker
    reloads a space's aggregator when the file changes, and the previous file stays for
    rollback. The space records the network's architecture beside the file.
    """
    # Imported where used: the network module loads torch, which the web process (the admin
    # imports this module) never needs.
    from retrieval.engine.aggregator import save_aggregator

    name = f"aggregators/space{space.pk}-{origin}{timezone.now():%Y%m%d-%H%M%S-%f}.safetensors"
    path = Path(settings.MEDIA_ROOT) / name
    save_aggregator(net, path, extra_metadata={"space_fingerprint": space.fingerprint, **metadata})
    space.aggregator_file.name = name
    space.aggregator_architecture = net.config.architecture
    space.save(update_fields=["aggregator_file", "aggregator_architecture"])
    return path
