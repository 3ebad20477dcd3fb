"""Operations that remove photos: rows and files together, whatever else is running.

A delete locks before it looks. A library delete first locks the library's row (an upload's
photo, whose foreign key Postgres checks when it commits, waits for it there and then fails:
`library_deleted`), then the photos' rows, in id order (`FOR UPDATE`): an indexing batch or a thumbnail that holds
or references a photo commits first, and only then does the delete collect what refers to the
photo (vectors, renditions, album entries). Collecting first, as a plain cascade does, misses
the vectors a running batch inserts and fails on their foreign key.

Files go only after the rows' transaction commits, and PendingFiles recorded in that same
transaction (assets.media) name them, so a kill in between leaves work for the sweeper, never a
file without a row or a row without its file. A delete that cannot get its locks in
LOCK_TIMEOUT, or is chosen as a deadlock's victim twice, raises DeleteBusy (the API answers 409).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet

from .media import record_removal, settle_quietly
from .models import Asset, Library, Rendition

T = TypeVar("T")

# Longer than an indexing batch or a thumbnail takes to commit; shorter than a web worker's timeout.
LOCK_TIMEOUT = "20s"
_DEADLOCK, _LOCK_NOT_AVAILABLE = "40P01", "55P03"
BUSY_MESSAGE = "Its photos are busy being processed right now; nothing was deleted. Try again in a moment."


class DeleteBusy(Exception):
    """The rows could not be locked in time; nothing was deleted."""

    def __init__(self, message: str = BUSY_MESSAGE):
        super().__init__(message)
        self.message = message


def delete_assets(assets: QuerySet[Asset]) -> int:
    """Delete photos with their renditions and files; returns how many."""
    return _retrying(partial(_delete_assets, assets))


def delete_library(library: Library) -> int:
    """Delete a library with every photo and derived file; returns the number of photos."""
    return _retrying(partial(_delete_library, library))


def _delete_library(library: Library) -> int:
    with transaction.atomic():
        _set_lock_timeout()
        if not list(Library.objects.select_for_update().filter(pk=library.pk).values_list("pk", flat=True)):
            return 0  # deleted by someone else meanwhile
        count = _delete_assets(Asset.objects.filter(library_id=library.pk))
        Library.objects.filter(pk=library.pk).delete()  # members, refused files, import records
    return count


def _delete_assets(assets: QuerySet[Asset]) -> int:
    with transaction.atomic():
        _set_lock_timeout()
        ids = list(assets.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))
        if not ids:
            return 0
        # Read after the locks: renditions committed by a task the lock waited for are included.
        names = list(Asset.objects.filter(pk__in=ids).values_list("file", flat=True))
        names += Rendition.objects.filter(asset_id__in=ids).values_list("file", flat=True)
        pending = record_removal(names)
        Asset.objects.filter(pk__in=ids).delete()
        transaction.on_commit(partial(settle_quietly, pending))
    return len(ids)


def _set_lock_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


def _retrying(delete: Callable[[], T]) -> T:
    """Run a delete; a deadlock victim tries once more (when it owns its transaction)."""
    retry = not connection.in_atomic_block
    while True:
        try:
            return delete()
        except OperationalError as exc:
            state = getattr(exc.__cause__, "sqlstate", None)
            if state == _DEADLOCK and retry:
                retry = False
                continue
            if state in (_DEADLOCK, _LOCK_NOT_AVAILABLE):
                raise DeleteBusy() from exc
            raise
