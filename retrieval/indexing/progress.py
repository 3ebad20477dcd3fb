"""Where a photo stands in a space: indexed, failed or pending, and the counts of those states.

One rule, one home: a photo is *indexed* in a space when it has a vector there, *failed* when
it has a failure and no vector, *pending* otherwise; photos whose ingestion failed never count.
The pages, the API, the admin (its list filter and its per-library column), the indexing task
and the sweeper all read the state through this module.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Case, Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from assets.models import Asset, Library
from assets.photo_counts import percent_done

from ..models import AssetEmbedding, EmbeddingSpace, IndexingFailure

INDEXED, PENDING, FAILED = "indexed", "pending", "failed"
STATES = (INDEXED, PENDING, FAILED)


def has_embedding(space: EmbeddingSpace) -> Exists:
    return Exists(AssetEmbedding.objects.filter(asset=OuterRef("pk"), space=space))


def has_failure(space: EmbeddingSpace) -> Exists:
    return Exists(IndexingFailure.objects.filter(asset=OuterRef("pk"), space=space))


def indexable_assets() -> QuerySet[Asset]:
    """Photos that should have a vector: everything stored that did not fail ingestion."""
    return Asset.objects.exclude(status=Asset.Status.FAILED)


def in_state(assets: QuerySet[Asset], space: EmbeddingSpace, state: str) -> QuerySet[Asset]:
    """The photos of `assets` in `state` (one of STATES) in `space`."""
    if state == INDEXED:
        return assets.filter(has_embedding(space))
    if state == FAILED:
        return assets.filter(has_failure(space), ~has_embedding(space))
    if state == PENDING:
        return assets.filter(~has_embedding(space), ~has_failure(space))
    raise ValueError(f"unknown index state {state!r}; one of {STATES}")


def pending_assets(space: EmbeddingSpace) -> QuerySet[Asset]:
    return in_state(indexable_assets(), space, PENDING)


def asset_state(asset: Asset, space: EmbeddingSpace) -> tuple[str, str | None]:
    """(state, the failure's error or None) of one photo in `space`."""
    state = (Asset.objects.filter(pk=asset.pk)
             .annotate(_state=Case(When(has_embedding(space), then=Value(INDEXED)),
                                   When(has_failure(space), then=Value(FAILED)), default=Value(PENDING)))
             .values_list("_state", flat=True).get())
    error = None
    if state == FAILED:
        error = IndexingFailure.objects.filter(asset=asset, space=space).values_list("error", flat=True).first()
    return state, error


@dataclass(frozen=True)
class IndexProgress:
    total: int
    indexed: int
    failed: int

    @property
    def pending(self) -> int:
        return self.total - self.indexed - self.failed

    @property
    def percent(self) -> int | None:
        """The share of the photos whose indexing is over (indexed or failed); None when there
        are no photos (`assets.photo_counts.percent_done`)."""
        return percent_done(self.indexed + self.failed, self.total)

    def as_dict(self) -> dict:
        return {"total": self.total, "indexed": self.indexed, "pending": self.pending,
                "failed": self.failed, "percent": self.percent}


def _counts() -> dict:
    return {"total": Count("pk"),
            "indexed": Count("pk", filter=Q(_indexed=True)),
            "failed": Count("pk", filter=Q(_failed=True, _indexed=False))}


def index_progress(space: EmbeddingSpace | None, libraries: QuerySet[Library] | None = None) -> IndexProgress:
    """Counts of a space over some libraries (all when None), in one query."""
    assets = indexable_assets()
    if libraries is not None:
        assets = assets.filter(library__in=libraries)
    if space is None:
        return IndexProgress(total=assets.count(), indexed=0, failed=0)
    counts = assets.annotate(_indexed=has_embedding(space), _failed=has_failure(space)).aggregate(**_counts())
    return IndexProgress(**counts)


def progress_by_library(space: EmbeddingSpace | None, libraries: QuerySet[Library]) -> dict[int, IndexProgress]:
    """Per-library counts for a list page, in one grouped query."""
    assets = indexable_assets().filter(library__in=libraries)
    if space is None:
        rows = assets.values("library_id").annotate(total=Count("pk"))
        return {r["library_id"]: IndexProgress(total=r["total"], indexed=0, failed=0) for r in rows}
    rows = (assets.annotate(_indexed=has_embedding(space), _failed=has_failure(space))
            .values("library_id").annotate(**_counts()))
    return {r["library_id"]: IndexProgress(total=r["total"], indexed=r["indexed"], failed=r["failed"]) for r in rows}


def with_library_progress(libraries: QuerySet[Library], space: EmbeddingSpace | None) -> QuerySet[Library]:
    """`libraries` annotated with `index_total`, `index_indexed` and `index_failed` (a list page
    in one query: the admin's library list)."""

    def count(assets: QuerySet[Asset]) -> Coalesce:
        per_library = assets.filter(library=OuterRef("pk")).order_by().values("library").annotate(n=Count("pk"))
        return Coalesce(Subquery(per_library.values("n"), output_field=IntegerField()), 0)

    assets = indexable_assets()
    if space is None:
        return libraries.annotate(index_total=count(assets), index_indexed=Value(0), index_failed=Value(0))
    return libraries.annotate(index_total=count(assets), index_indexed=count(in_state(assets, space, INDEXED)),
                              index_failed=count(in_state(assets, space, FAILED)))
