"""REST API of photo libraries and photos."""
from __future__ import annotations

import re

from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, Throttled, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from .ingest import ingest_upload
from .limits import UploadQuotaExceeded, check_upload_quota
from .models import Asset, LibraryMembership
from .permissions import Access, access_to, libraries_visible_to
from .serializers import (
    AssetSerializer,
    LibrarySerializer,
    MembershipSerializer,
    RejectedFileSerializer,
    UploadResultSerializer,
)
from .services import delete_assets, delete_library


class PhotoPagination(PageNumberPagination):
    """Pages of photos everywhere in the API (a library's photos, search results, albums),
    with the page sizes the galleries offer (`size`, at most 200)."""

    page_size = 48
    page_size_query_param = "size"
    max_page_size = 200


MAX_IDS = 200  # the largest page of photos
_ID = re.compile(r"[0-9]{1,18}")  # fits the bigint column: a larger number is no photo's id, not a 500


def parse_ids(text: str) -> list[int]:
    """'3,5,8' -> [3, 5, 8]; a clear 400 for anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(_ID.fullmatch(part) for part in parts):
        raise ValidationError({"ids": ["Photo ids (integers), separated by commas."]})
    if len(parts) > MAX_IDS:
        raise ValidationError({"ids": [f"At most {MAX_IDS} ids at a time."]})
    return [int(part) for part in parts]


def require_access(user, library, need: Access) -> None:
    if access_to(user, library) < need:
        raise PermissionDenied(f"You need {need.name.lower()} access to this library.")


class LibraryViewSet(viewsets.ModelViewSet):
    serializer_class = LibrarySerializer
    pagination_class = None  # a user has few libraries
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return (
            libraries_visible_to(self.request.user)
            .select_related("owner")
            .annotate(photo_count=Count("assets", distinct=True))
            .order_by("name", "id")
        )

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)

    def create(self, request, *args, **kwargs):
        response = super().create(request, *args, **kwargs)
        response.data["photo_count"] = 0
        return response

    def perform_update(self, serializer):
        require_access(self.request.user, serializer.instance, Access.OWN)
        serializer.save()

    def perform_destroy(self, instance):
        require_access(self.request.user, instance, Access.OWN)
        delete_library(instance)

    @extend_schema(
        request={"multipart/form-data": inline_serializer("PhotoUpload", {"files": serializers.ListField(child=serializers.FileField())})},
        responses=UploadResultSerializer,
        description="Add photos (JPEG, PNG, WebP, TIFF, GIF, HEIC/HEIF) or zip archives of photos. "
        "Every file gets an outcome: stored, duplicate (with the existing photo's id) or rejected (with a reason).",
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request, pk=None):
        library = self.get_object()
        require_access(request.user, library, Access.EDIT)
        files = request.FILES.getlist("files") + request.FILES.getlist("file")
        if not files:
            raise ValidationError({"files": ["No files: send one or more files in the 'files' field."]})
        try:
            check_upload_quota(request.user, len(files))
        except UploadQuotaExceeded as exc:
            raise Throttled(wait=exc.retry_after_seconds, detail=exc.message) from None
        outcomes = [o for f in files for o in ingest_upload(library, f, f.name, uploaded_by=request.user)]
        body = {
            "stored": sum(o.status == "stored" for o in outcomes),
            "duplicates": sum(o.status == "duplicate" for o in outcomes),
            "rejected": sum(o.status == "rejected" for o in outcomes),
            "results": [o.as_dict() for o in outcomes],
        }
        return Response(body, status=status.HTTP_200_OK)

    @extend_schema(responses=inline_serializer("PaginatedRejectedFileList", {
        "count": serializers.IntegerField(), "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True), "results": RejectedFileSerializer(many=True),
    }))
    @action(detail=True, methods=["get"])
    def rejected(self, request, pk=None):
        library = self.get_object()
        paginator = PhotoPagination()
        page = paginator.paginate_queryset(library.rejected_files.all(), request, view=self)
        return paginator.get_paginated_response(RejectedFileSerializer(page, many=True).data)

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    def members(self, request, pk=None):
        library = self.get_object()
        if request.method == "POST":
            require_access(request.user, library, Access.OWN)
            from .forms import MemberForm

            form = MemberForm(request.data, library=library)
            if not form.is_valid():
                raise ValidationError(form.errors)
            LibraryMembership.objects.update_or_create(library=library, user=form.user, defaults={"role": form.cleaned_data["role"]})
        rows = library.memberships.select_related("user").order_by("user__username")
        return Response(MembershipSerializer(rows, many=True).data)


class AssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = AssetSerializer
    pagination_class = PhotoPagination

    def get_queryset(self):
        assets = Asset.objects.filter(library__in=libraries_visible_to(self.request.user)).prefetch_related("renditions")
        library = self.request.query_params.get("library")
        if library is not None:
            if not library.isdigit():
                raise ValidationError({"library": ["A library id (an integer)."]})
            assets = assets.filter(library_id=int(library))
        ids = self.request.query_params.get("ids")
        if ids is not None:
            assets = assets.filter(pk__in=parse_ids(ids))
        order = self.request.query_params.get("sort", "newest")
        if order == "taken":
            from django.db.models import F

            return assets.order_by(F("taken_at").desc(nulls_last=True), "-id")
        return assets.order_by("-created_at", "-id")

    @extend_schema(parameters=[
        OpenApiParameter("library", int, description="only photos of this library"),
        OpenApiParameter("ids", str, description=f"only these photos: up to {MAX_IDS} ids, comma-separated "
                         "(a page refreshing the tiles it shows)"),
        OpenApiParameter("sort", str, enum=["newest", "taken"], description="newest upload first, or by capture time"),
    ])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_destroy(self, instance):
        require_access(self.request.user, instance.library, Access.EDIT)
        delete_assets(Asset.objects.filter(pk=instance.pk))
