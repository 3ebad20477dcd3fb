"""REST API of photo libraries and photos."""
from __future__ import annotations

import re

from django import forms
from django.db.models import Count
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from .export import CSV_COLUMN_HELP, EXPORT_FORMATS, ZIP_NAME_HELP
from .ingest import (
    DUPLICATE,
    FAILED,
    LIBRARY_DELETED,
    NOT_RECEIVED,
    REJECTED,
    SERVER_ERROR,
    SKIPPED,
    STORED,
    IngestOutcome,
    Ingestion,
    failed,
)
from .limits import UploadQuotaExceeded, check_upload_quota
from .list_filters import LIST_FILTERS, IdFilter, SortFilter, filter_list
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
from .services import DeleteBusy, delete_assets, delete_library
from .uploads import files_cut_off

# The HTTP status of an upload whose files did not all get a final outcome, worst first. The
# body lists every file whatever the status.
UPLOAD_FAILURE_STATUS = {
    SERVER_ERROR: status.HTTP_500_INTERNAL_SERVER_ERROR,
    LIBRARY_DELETED: status.HTTP_409_CONFLICT,
    NOT_RECEIVED: status.HTTP_400_BAD_REQUEST,
}
UPLOAD_DESCRIPTION = (
    "Add photos (JPEG, PNG, WebP, TIFF, GIF, HEIC/HEIF) or zip archives of photos, in the multipart "
    "field `files` (one or many). Every file, and every entry of an archive, gets an outcome in "
    "`results`, whatever the HTTP status: `stored` (asset_id: the new photo), `duplicate` (asset_id: "
    "the photo with the same bytes already in the library), `rejected` (the file is refused: reason "
    "and message), `skipped` (archive entries that are desktop metadata: reason `not_a_photo`) or "
    "`failed` (the server kept nothing of the file; send it again): reason `server_error`, "
    "`library_deleted` or `not_received` (the request ended before the file arrived whole). Entries "
    "of an archive name it in `archive`. The status is 200 unless a file failed: 500 when one failed "
    "with `server_error`, else 409 for `library_deleted`, else 400 for `not_received`; the files "
    "stored before the failure stay stored."
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with work in progress; try again."
    default_code = "conflict"


def upload_result(outcomes: list[IngestOutcome]) -> tuple[dict, int]:
    """The body and HTTP status of an upload (UPLOAD_DESCRIPTION)."""
    def count(state: str) -> int:
        return sum(o.status == state for o in outcomes)

    counts = {"stored": count(STORED), "duplicates": count(DUPLICATE), "rejected": count(REJECTED),
              "skipped": count(SKIPPED), "failed": count(FAILED)}
    reasons = {o.reason for o in outcomes if o.status == FAILED}
    code = next((code for reason, code in UPLOAD_FAILURE_STATUS.items() if reason in reasons), status.HTTP_200_OK)
    return {**counts, "results": [o.as_dict() for o in outcomes]}, code


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


MAX_IDS = 200  # the largest page of photos
_ID = re.compile(r"[0-9]{1,18}")  # fits the bigint column: a larger number is no photo's id, not a 500


class IdListField(forms.CharField):
    """'3,5,8' -> [3, 5, 8]. Given but empty (`?ids=`) is refused like any malformed list, never
    read as "no filter": a client that sends the ids of an empty selection gets a 400, not every
    photo."""

    def to_python(self, value):
        if value is None:
            return None
        parts = [part.strip() for part in str(value).split(",") if part.strip()]
        if not parts or not all(_ID.fullmatch(part) for part in parts):
            raise forms.ValidationError("Photo ids (integers), separated by commas.")
        if len(parts) > MAX_IDS:
            raise forms.ValidationError(f"At most {MAX_IDS} ids at a time.")
        return [int(part) for part in parts]
class DownloadNegotiation(BaseContentNegotiation):
    """For download actions (exports): the URL names the format, so the client's Accept header
    chooses nothing; the first renderer (JSON) renders the errors, and a download is streamed
    without any renderer."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


EXPORT_URL_PATH = r"export/(?P<kind>csv|zip)"


def export_schema(what: str):
    """The schema of an export action: `kind` in the path, a CSV or ZIP download."""
    columns = "; ".join(f"`{name}`: {meaning}" for name, meaning in CSV_COLUMN_HELP)
    body = (f"`csv`: one row per photo, columns {columns}. `zip`: the original files, stored uncompressed, "
            f"named {ZIP_NAME_HELP}; a photo whose file was deleted during the export is listed in a last member, "
            "MISSING.txt.")
    return extend_schema(
        parameters=[OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(EXPORT_FORMATS),
                                     description="`csv`: one row per photo; `zip`: the photos' original files")],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description=body),
                   (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description=body)},
        description=(f"Download {what}, as CSV or as a ZIP of their original files, streamed as it is made (no "
                     "Content-Length). Only photos of libraries you may see now are included."),
    )


def require_access(user, library, need: Access) -> None:
    if access_to(user, library) < need:
        raise PermissionDenied(f"You need {need.name.lower()} access to this library.")


_CONFLICT_DETAIL = inline_serializer("ConflictDetail", {"detail": serializers.CharField()})


def busy_delete(what: str):
    """The schema of a delete that may answer 409 (assets.services.DeleteBusy)."""
    return extend_schema(responses={
        204: None,
        409: OpenApiResponse(_CONFLICT_DETAIL, description=(
            f"The {what} could not be locked in time (its photos are being processed); nothing was deleted. "
            "Try again in a moment.")),
    })


@extend_schema_view(destroy=busy_delete("library"))
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
        try:
            delete_library(instance)
        except DeleteBusy as busy:
            raise Conflict(f"The library was not deleted. {busy.message}") from None

    @extend_schema(
        request={"multipart/form-data": inline_serializer("PhotoUpload", {"files": serializers.ListField(child=serializers.FileField())})},
        responses={
            200: UploadResultSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description=(
                "No files sent ({\"files\": [message]}), or a file did not arrive whole: then the body is an "
                "upload result (UploadResult) whose `not_received` files failed")),
            409: UploadResultSerializer, 500: UploadResultSerializer,
        },
        description=UPLOAD_DESCRIPTION,
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request, pk=None):
        library = self.get_object()
        require_access(request.user, library, Access.EDIT)
        files = request.FILES.getlist("files") + request.FILES.getlist("file")
        cut_off = files_cut_off(request)  # the request's body ended inside these
        if not files and not cut_off:
            raise ValidationError({"files": ["No files: send one or more files in the 'files' field."]})
        try:
            check_upload_quota(request.user, len(files))
        except UploadQuotaExceeded as exc:
            raise Throttled(wait=exc.retry_after_seconds, detail=exc.message) from None
        ingestion = Ingestion(library, uploaded_by=request.user)
        outcomes = [o for f in files for o in ingestion.upload(f, f.name)]
        outcomes += [failed(name, NOT_RECEIVED) for name in cut_off]  # the body ended with them
        body, code = upload_result(outcomes)
        return Response(body, status=code)

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


@extend_schema_field(OpenApiTypes.STR)
class IdsFilter(filters.Filter):
    field_class = IdListField

    def filter(self, queryset, value):
        # Unlike other filters, an empty list is not "not given" (IdListField refuses `?ids=`).
        return queryset if value is None else queryset.filter(**{f"{self.field_name}__{self.lookup_expr}": value})


class AssetListFilter(filters.FilterSet):
    library = IdFilter(field_name="library_id", help_text="only photos of this library",
                       error_messages={"invalid": "A library id (an integer)."})
    ids = IdsFilter(field_name="pk", lookup_expr="in",
                    help_text=f"only these photos: up to {MAX_IDS} ids, comma-separated (a page refreshing the tiles "
                              "it shows)")
    sort = SortFilter(PHOTO_SORTS, help_text="newest upload first (default), oldest first, or by capture time "
                                             "(photos without one last)")


@extend_schema_view(destroy=busy_delete("photo"))
class AssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = AssetSerializer
    pagination_class = PhotoPagination
    filter_backends = LIST_FILTERS
    filterset_class = AssetListFilter

    def get_queryset(self):
        assets = Asset.objects.filter(library__in=libraries_visible_to(self.request.user)).prefetch_related("renditions")
        return assets.order_by(*PHOTO_SORTS["newest"])

    def filter_queryset(self, queryset):
        if self.action != "list":  # one photo is read by its id, whatever the list's parameters
            return queryset
        return filter_list(AssetListFilter, self.request, queryset)

    def perform_destroy(self, instance):
        require_access(self.request.user, instance.library, Access.EDIT)
        try:
            delete_assets(Asset.objects.filter(pk=instance.pk))
        except DeleteBusy as busy:
            raise Conflict(f"The photo was not deleted. {busy.message}") from None
