"""REST API of retrieval: searches and their results, and indexing state."""
from __future__ import annotations

from contextlib import contextmanager

from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from assets.api import EXPORT_URL_PATH, DownloadNegotiation, PhotoPagination, export_schema
from assets.export import export_response
from assets.list_filters import LIST_FILTERS, FlagFilter, SortFilter, filter_list
from assets.models import Asset, Library
from assets.photo_counts import thumbnail_progress
from assets.permissions import library_for

from .indexing.progress import asset_state, index_progress
from .indexing.spaces import active_space, serving_space
from .models import Search
from .search.export import search_export_name, search_export_rows
from .search.limits import RateLimited
from .search.results import SORTS, matching_results
from .search.service import Refinement, SearchInputError, SearchRequest, create_search, refine_search
from .serializers import SearchCreateSerializer, SearchRefineSerializer, SearchResultSerializer, SearchSerializer

_PERCENT = serializers.IntegerField(
    allow_null=True, help_text="Whole percent of `total` whose work is over (done or failed), rounded down: 100 only "
                               "when nothing is pending; null when the library has no photos")
_COUNTS = {**{name: serializers.IntegerField() for name in ("total", "indexed", "pending", "failed")}, "percent": _PERCENT}
_THUMBNAILS = inline_serializer("ThumbnailProgress", {
    **{name: serializers.IntegerField() for name in ("total", "made", "pending", "failed")}, "percent": _PERCENT,
}, help_text="The photos' thumbnails and previews: made, being made, or failed (a photo that could not be read)")


def library_progress(library: Library) -> dict:
    """Index counts of the active space, and the thumbnails' counts; while a new space is being
    filled, the counts of the space search still uses are given too."""
    active, serving = active_space(), serving_space()
    libraries = Library.objects.filter(pk=library.pk)
    body = {"space": active.name if active else None, **index_progress(active, libraries).as_dict(),
            "thumbnails": thumbnail_progress(library).as_dict()}
    body["searchable"] = serving is not None and (body["indexed"] > 0 or serving != active)
    body["reindexing"] = None
    if serving and active and serving != active:
        body["reindexing"] = {"serving_space": serving.name, **index_progress(serving, libraries).as_dict()}
    return body


class LibraryIndexProgressView(APIView):
    @extend_schema(responses=inline_serializer("LibraryIndexProgress", {
        "space": serializers.CharField(allow_null=True), **_COUNTS, "thumbnails": _THUMBNAILS,
        "searchable": serializers.BooleanField(),
        "reindexing": inline_serializer("ReindexProgress", {"serving_space": serializers.CharField(), **_COUNTS}, allow_null=True),
    }))
    def get(self, request, pk):
        library, _ = library_for(request.user, pk)
        return Response(library_progress(library))


class AssetIndexStatusView(APIView):
    @extend_schema(responses=inline_serializer("AssetIndexStatus", {
        "space": serializers.CharField(allow_null=True),
        "status": serializers.ChoiceField(choices=["indexed", "pending", "failed", "no_space"]),
        "error": serializers.CharField(allow_null=True),
    }))
    def get(self, request, pk):
        asset = get_object_or_404(Asset, pk=pk)
        library_for(request.user, asset.library_id)
        space = active_space()
        if space is None:
            return Response({"space": None, "status": "no_space", "error": None})
        state, error = asset_state(asset, space)
        return Response({"space": space.name, "status": state, "error": error})


@contextmanager
def _service_errors():
    """The search service's refusals as the API's answers (400 naming the field, 429)."""
    try:
        yield
    except SearchInputError as exc:
        raise ValidationError(exc.errors) from None
    except RateLimited as exc:
        raise Throttled(wait=exc.retry_after_seconds, detail=exc.message) from None


class SearchResultFilter(filters.FilterSet):
    """A search's results: all by rank, or only the estimated matches by rank or a date."""

    matches_only = FlagFilter(method="only_matches", help_text="true (or 1): only the estimated matches "
                                                               "(rank <= match_count)")
    sort = SortFilter(SORTS, then=("rank",), help_text="with matches_only: by capture or upload time (else by rank)")

    def __init__(self, *args, search: Search | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.search = search

    def only_matches(self, rows, name, value):
        return rows.filter(rank__lte=self.search.match_count or 0) if value else rows

    def filter_queryset(self, rows):
        # A date order is for the matches only: the whole top N stays by rank.
        if not self.form.cleaned_data.get("matches_only"):
            self.form.cleaned_data["sort"] = ""
        return super().filter_queryset(rows)


class SearchViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                    viewsets.GenericViewSet):
    """Searches of the current user. POST creates one and answers 202: the search runs on a
    worker; poll its URL until `status` is `done`, then page through `results_url`."""

    serializer_class = SearchSerializer
    pagination_class = PhotoPagination
    # For the schema generator, which has no user to call get_queryset() with: the id's type.
    queryset = Search.objects.none()

    def get_queryset(self):
        return (Search.objects.filter(user=self.request.user).select_related("space", "proxy_set")
                .prefetch_related("libraries", "positive_assets", "negative_assets", "proxy_set__images").order_by("-created_at", "-id"))

    filterset_class = None  # each list action names its own

    def filter_queryset(self, queryset):
        # The filter backends given to actions describe their lists' parameters (the schema);
        # the lists read them through `filter_list`, never the lookup of the object itself.
        return queryset

    def get_serializer_class(self):
        return {"create": SearchCreateSerializer, "refine": SearchRefineSerializer}.get(self.action, SearchSerializer)

    def perform_create(self, serializer):
        with _service_errors():
            serializer.instance = create_search(self.request.user, SearchRequest(**serializer.validated_data))

    @extend_schema(request=SearchCreateSerializer, responses={202: SearchSerializer},
                   description="429 when the user has used up the hour's searches that generate new proxy images.")
    def create(self, request, *args, **kwargs):
        response = super().create(request, *args, **kwargs)
        response.status_code = status.HTTP_202_ACCEPTED  # accepted: a worker runs it (poll `url`)
        return response

    @extend_schema(request=SearchRefineSerializer, responses={202: SearchSerializer})
    @action(detail=True, methods=["post"])
    def refine(self, request, pk=None):
        parent = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with _service_errors():
            search = refine_search(parent, request.user, Refinement(**serializer.validated_data))
        body = SearchSerializer(self.get_queryset().get(pk=search.pk), context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(responses=SearchResultSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=LIST_FILTERS, filterset_class=SearchResultFilter)
    def results(self, request, pk=None):
        search = self.get_object()
        # Ordered by rank (or a date, then rank), a unique key per search: pages never overlap
        # or skip a result.
        rows = filter_list(SearchResultFilter, request, matching_results(search, request.user), search=search)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(SearchResultSerializer(page, many=True, context={"request": request}).data)

    @export_schema("the search's matches (rank up to `match_count`), by rank")
    @action(detail=True, methods=["get"], url_path=EXPORT_URL_PATH, url_name="export",
            content_negotiation_class=DownloadNegotiation)
    def export(self, request, pk=None, kind=None):
        search = self.get_object()
        return export_response(search_export_rows(search, request.user), kind, search_export_name(search))
