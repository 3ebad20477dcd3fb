"""REST API of photo libraries and photos."""
from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from .ingest import ingest_upload
from .limits import UploadQuotaExceeded, check_upload_quota
from .models import PHOTO_SORTS, Asset, LibraryMembership
from .permissions import Access, access_to, libraries_visible_to
from .serializers import (
    AssetSerializer,
    LibrarySerializer,
    MemberRoleSerializer,
    MembershipSerializer,
    RejectedFileSerializer,
    UploadResultSerializer,
)
from .services import delete_assets, delete_library


class PhotoPagination(PageNumberPagination):
    """Every paginated answer of the API (a library's photos and refused files, searches, search
    results, album photos): `page` and `size`, one rule everywhere.

    A value that means nothing is refused with a 400 naming the parameter (`size=0`, `size=-5`,
    `size=100000`, `page=0`, `page=x`) rather than quietly replaced, so a client never takes a
    page of 200 for the 100000 rows it asked for; a page past the last one does not exist (404).
    Empty values count as not given.
    """

    page_size = 48
    page_size_query_param = "size"
    max_page_size = 200
    page_query_description = "Page number, from 1 (default 1), or `last`; a page past the last one answers 404."
    page_size_query_description = f"Items per page, from 1 to {max_page_size} (default {page_size}); other values answer 400."
    invalid_page_message = "Page {page_number} is past the last page."

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param, "")
        if raw == "":
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]})
        return int(raw)

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param, "")
        if raw == "" or raw in self.last_page_strings:
            return super().get_page_number(request, paginator)
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_query_param: ["A page number from 1, or 'last'."]})
        return int(raw)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        page, size = super().get_schema_operation_parameters(view)
        page["schema"] = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": list(self.last_page_strings)}]}
        size["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size, "default": self.page_size}
        return [page, size]


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

    @extend_schema(responses=RejectedFileSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=PhotoPagination)
    def rejected(self, request, pk=None):
        library = self.get_object()
        page = self.paginate_queryset(library.rejected_files.all())
        return self.get_paginated_response(RejectedFileSerializer(page, many=True).data)

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer(many=True),
                   description="GET: the library's members. POST (owner): add a member, or give one a new role.")
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

    @extend_schema(methods=["PATCH"], request=MemberRoleSerializer, responses=MembershipSerializer,
                   description="Change a member's role (owner).")
    @extend_schema(methods=["DELETE"], responses={204: None},
                   description="Remove a member (owner): the library is closed to them at once.")
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<username>[\w.@+-]+)", url_name="member")
    def member(self, request, pk=None, username=None):
        library = self.get_object()
        require_access(request.user, library, Access.OWN)
        membership = library.memberships.select_related("user").filter(user__username=username).first()
        if membership is None:
            raise NotFound(f"{username} is no member of this library.")
        if request.method == "DELETE":
            membership.delete()
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = MemberRoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership.role = data.validated_data["role"]
        membership.save(update_fields=["role"])
        return Response(MembershipSerializer(membership).data)


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
        order = self.request.query_params.get("sort") or "newest"
        if order not in PHOTO_SORTS:
            raise ValidationError({"sort": [f"One of: {', '.join(PHOTO_SORTS)}."]})
        return assets.order_by(*PHOTO_SORTS[order])

    @extend_schema(parameters=[
        OpenApiParameter("library", int, description="only photos of this library"),
        OpenApiParameter("sort", str, enum=list(PHOTO_SORTS),
                         description="newest upload first (default), oldest first, or by capture time (photos without one last)"),
    ])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_destroy(self, instance):
        require_access(self.request.user, instance.library, Access.EDIT)
        delete_assets(Asset.objects.filter(pk=instance.pk))
