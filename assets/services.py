"""Operations that remove photos: rows and files together."""
from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet

from .models import Asset, Library, Rendition


def delete_assets(assets: QuerySet[Asset]) -> int:
    """Delete photos with their renditions; returns how many.

    Rows go first, in one transaction; files are removed only after it commits, so a failed
    delete never leaves rows pointing at missing files.
    """
    ids = list(assets.values_list("pk", flat=True))
    names = list(Asset.objects.filter(pk__in=ids).values_list("file", flat=True))
    names += list(Rendition.objects.filter(asset_id__in=ids).values_list("file", flat=True))
    with transaction.atomic():
        Asset.objects.filter(pk__in=ids).delete()
        transaction.on_commit(lambda: _remove_files(names))
    return len(ids)


def delete_library(library: Library) -> int:
    """Delete a library with every photo and derived file; returns the number of photos."""
    with transaction.atomic():
        count = delete_assets(library.assets.all())
        library.delete()
    return count


def _remove_files(names: list[str]) -> None:
    for name in names:
        if name:
            default_storage.delete(name)  # a missing file is fine: it is what we want
