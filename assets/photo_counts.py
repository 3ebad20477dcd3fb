"""How many photos a library holds and how far their thumbnails are: one rule for the library
list, the library page and the progress API.

A photo's thumbnails are *made* when it is ready, *being made* while it is pending, and *failed*
when the photo could not be read. Every stored photo counts, failed ones included, so the list
and the library page give the same number.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from .models import Asset, Library


def percent_done(done: int, total: int) -> int | None:
    """`done` of `total` in whole percent, rounded down so that 100 means all of them; None when
    there is nothing to do (an empty library is not "100% done": no work happened)."""
    return None if total == 0 else 100 * done // total


@dataclass(frozen=True)
class ThumbnailProgress:
    total: int
    made: int
    failed: int

    @property
    def pending(self) -> int:
        return self.total - self.made - self.failed

    @property
    def percent(self) -> int | None:
        return percent_done(self.made + self.failed, self.total)

    def as_dict(self) -> dict:
        return {"total": self.total, "made": self.made, "pending": self.pending, "failed": self.failed,
                "percent": self.percent}


def thumbnail_progress(library: Library) -> ThumbnailProgress:
    counts = library.assets.aggregate(total=Count("pk"), made=Count("pk", filter=Q(status=Asset.Status.READY)),
                                      failed=Count("pk", filter=Q(status=Asset.Status.FAILED)))
    return ThumbnailProgress(**counts)


def with_photo_counts(libraries: QuerySet[Library]) -> QuerySet[Library]:
    """`libraries` annotated with `photo_count` and `thumbnails_pending` (a list page in one query).

    Distinct counts: a queryset filtered through memberships has a row per membership."""
    return libraries.annotate(
        photo_count=Count("assets", distinct=True),
        thumbnails_pending=Count("assets", filter=Q(assets__status=Asset.Status.PENDING), distinct=True))
