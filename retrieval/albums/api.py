"""REST API of smart albums: list, create from a search, retrieve, rename and share, photos,
pin, remove, hand a photo back to its score, delete.

An album is its owner's; a shared one is also readable by the members of its libraries
(`albums.can_view`). One the user cannot see answers 404; a shared one they see but do not own
answers 403 to every change. An album's photos are read through
`retrieval.albums.albums.album_photos`, which keeps the libraries the *viewer* may see now.
"""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from assets.api import EXPORT_URL_PATH, DownloadNegotiation, PhotoPagination, export_schema
from assets.export import export_response
from assets.list_filters import LIST_FILTERS, SortFilter, filter_list

from ..models import Album, AlbumPhoto, Search
from ..search.results import SORTS
from ..serializers import PhotoFiltersSerializer
from .albums import (
    NOT_OWNER,
    AlbumError,
    album_photos,
    albums_visible_to,
    can_view,
    change_album,
    create_album_from_search,
    delete_album,
    set_photo_state,
)
from .export import album_export_name, album_export_rows, album_sidecar_keywords


class AlbumSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    photos_url = serializers.SerializerMethodField()
    libraries = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    space = serializers.CharField(source="space.name", default=None, read_only=True)
    owner = serializers.CharField(source="user.username", read_only=True)
    derivation = serializers.ChoiceField(Album.Derivation.choices, read_only=True, help_text=(
        "`current`; `updating`: being made again for the model search uses now (its photos stay meanwhile); "
        "`failed`: that failed (`derivation_error` says why; it is tried again later)"))
    filters = PhotoFiltersSerializer(read_only=True, help_text="The saved search's filters: photos outside them "
                                                               "join only when pinned")

    class Meta:
        model = Album
        # No proxy set id: sets are shared between users, and an id seen twice would tell one user
        # that another searched the same category (retrieval.search.cache_privacy).
        fields = ["id", "url", "photos_url", "name", "owner", "shared", "libraries", "space", "cutoff",
                  "source_search", "disabled_proxies", "filters", "derivation", "derivation_error", "created_at"]
        read_only_fields = ["shared", "derivation_error"]

    def get_url(self, album) -> str:
        return self.context["request"].build_absolute_uri(reverse("api:album-detail", args=[album.pk]))

    def get_photos_url(self, album) -> str:
        return self.context["request"].build_absolute_uri(reverse("api:album-photos", args=[album.pk]))


class AlbumCreateSerializer(serializers.Serializer):
    search = serializers.IntegerField(help_text="A finished search of yours to save")
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class AlbumChangeSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    shared = serializers.BooleanField(required=False, help_text=(
        "Shared read-only with the members of the album's libraries (each sees the photos of libraries they see)"))


class AlbumPhotoSerializer(serializers.ModelSerializer):
    library_id = serializers.IntegerField(source="asset.library_id")
    taken_at = serializers.DateTimeField(source="asset.taken_at")
    uploaded_at = serializers.DateTimeField(source="asset.created_at")
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = AlbumPhoto
        fields = ["asset_id", "library_id", "score", "state", "taken_at", "uploaded_at", "thumbnail_url"]

    def get_thumbnail_url(self, photo) -> str:
        return self.context["request"].build_absolute_uri(reverse("asset-rendition", args=[photo.asset_id, "thumb"]))


class AlbumPhotoStateSerializer(serializers.Serializer):
    asset = serializers.IntegerField()


def _flag(request, name: str) -> bool:
    """A boolean query parameter, read as DRF reads booleans (1/0, true/false, ...); other
    values answer 400 naming it."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return False
    try:
        return serializers.BooleanField().to_internal_value(raw)
    except serializers.ValidationError as exc:
        raise ValidationError({name: exc.detail}) from None


# What a member of a shared album may do: read it (the rest is its owner's).
READ_ACTIONS = frozenset({"retrieve", "photos", "export"})


class AlbumPhotoFilter(filters.FilterSet):
    sort = SortFilter(SORTS, help_text="by capture (default) or upload time")


class AlbumViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                   viewsets.GenericViewSet):
    serializer_class = AlbumSerializer
    # For the schema generator, which has no user to call get_queryset() with: the id's type.
    queryset = Album.objects.none()

    def get_queryset(self):
        return Album.objects.select_related("space", "user").prefetch_related("libraries")

    def get_object(self) -> Album:
        """The album when the user may see it (404 otherwise); a change by anyone but its owner
        answers 403."""
        album = get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])
        if not can_view(album, self.request.user):
            raise NotFound("No Album matches the given query.")
        if self.action not in READ_ACTIONS and album.user_id != self.request.user.pk:
            raise PermissionDenied(NOT_OWNER)
        return album

    def list(self, request):
        albums = albums_visible_to(request.user)
        return Response(AlbumSerializer(albums, many=True, context=self.get_serializer_context()).data)

    @extend_schema(request=AlbumChangeSerializer, responses=AlbumSerializer)
    def partial_update(self, request, pk=None):
        album = self.get_object()
        data = AlbumChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            change_album(album, **data.validated_data)
        except AlbumError as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        return Response(AlbumSerializer(self.get_queryset().get(pk=album.pk), context=self.get_serializer_context()).data)

    def perform_destroy(self, album):
        delete_album(album)

    filterset_class = None  # each list action names its own

    def filter_queryset(self, queryset):
        # The filter backends given to actions describe their lists' parameters (the schema);
        # the lists read them through `filter_list`, never the lookup of the object itself.
        return queryset

    @extend_schema(request=AlbumCreateSerializer, responses={201: AlbumSerializer})
    def create(self, request):
        data = AlbumCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        search = get_object_or_404(Search, pk=data.validated_data["search"], user=request.user)
        try:
            album = create_album_from_search(request.user, search, data.validated_data["name"])
        except AlbumError as exc:
            raise ValidationError({"search": [str(exc)]}) from None
        body = AlbumSerializer(self.get_queryset().get(pk=album.pk), context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(responses=AlbumPhotoSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=PhotoPagination, filter_backends=LIST_FILTERS,
            filterset_class=AlbumPhotoFilter)
    def photos(self, request, pk=None):
        album = self.get_object()
        page = self.paginate_queryset(filter_list(AlbumPhotoFilter, request, album_photos(album, request.user)))
        return self.get_paginated_response(AlbumPhotoSerializer(page, many=True, context={"request": request}).data)

    @export_schema("the album's photos (pinned and automatic), by capture time")
    @extend_schema(parameters=[OpenApiParameter("sidecars", bool, description=(
        "zip: follow each photo with an XMP sidecar (`<id>-<name>.xmp`: its title, caption, creator, copyright "
        "and keywords, and the album's name as one more keyword)"))])
    @action(detail=True, methods=["get"], url_path=EXPORT_URL_PATH, url_name="export",
            content_negotiation_class=DownloadNegotiation)
    def export(self, request, pk=None, kind=None):
        album = self.get_object()
        sidecars = album_sidecar_keywords(album) if _flag(request, "sidecars") else None
        return export_response(album_export_rows(album, request.user), kind, album_export_name(album), sidecars)

    def _set_state(self, request, state: str) -> Response:
        album = self.get_object()
        data = AlbumPhotoStateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            photo = set_photo_state(album, data.validated_data["asset"], state)
        except AlbumError as exc:
            raise ValidationError({"asset": [str(exc)]}) from None
        if photo is None:  # its score leaves it out of the album
            return Response(status=status.HTTP_204_NO_CONTENT)
        photo = AlbumPhoto.objects.select_related("asset").get(pk=photo.pk)
        return Response(AlbumPhotoSerializer(photo, context={"request": request}).data)

    @extend_schema(request=AlbumPhotoStateSerializer, responses=AlbumPhotoSerializer)
    @action(detail=True, methods=["post"])
    def pin(self, request, pk=None):
        return self._set_state(request, AlbumPhoto.State.PINNED)

    @extend_schema(request=AlbumPhotoStateSerializer, responses=AlbumPhotoSerializer)
    @action(detail=True, methods=["post"])
    def remove(self, request, pk=None):
        return self._set_state(request, AlbumPhoto.State.REMOVED)

    @extend_schema(request=AlbumPhotoStateSerializer, responses={200: AlbumPhotoSerializer, 204: None}, description=(
        "Undo a pin or a removal: the photo's score decides again. 200 with the photo (state `auto`) when it "
        "scores at least the cutoff; 204 when it does not, or is not indexed yet, and so is not in the album "
        "(it joins when indexing scores it above the cutoff)."))
    @action(detail=True, methods=["post"])
    def automatic(self, request, pk=None):
        return self._set_state(request, AlbumPhoto.State.AUTO)
