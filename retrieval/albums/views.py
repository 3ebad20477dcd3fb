"""Album pages: the list, an album's photos (by capture or upload time, pin/remove), its audit,
sharing, and saving a search as an album. Another user's album does not exist for you (404),
unless it is shared with you: then you read it, and every change answers 403."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from assets.export import export_response
from assets.views import PAGE_SIZES, page_size_from

from ..models import Album, AlbumPhoto, Search
from ..search.results import SORTS
from .albums import (
    NOT_OWNER,
    AlbumError,
    album_photos,
    albums_visible_to,
    audit,
    can_view,
    change_album,
    create_album_from_search,
    delete_album,
    set_photo_state,
)
from .export import album_export_name, album_export_rows, album_sidecar_keywords


def _album(request, pk) -> Album:
    """An album the user may see (their own, or shared with them), else 404."""
    album = get_object_or_404(Album.objects.select_related("proxy_set", "source_search", "user"), pk=pk)
    if not can_view(album, request.user):
        raise Http404("No such album.")
    return album


def _own_album(request, pk) -> Album:
    """An album the user may change: 404 when they cannot see it, 403 when it is shared with them."""
    album = _album(request, pk)
    if album.user_id != request.user.pk:
        raise PermissionDenied(NOT_OWNER)
    return album


def _sort(request) -> str:
    sort = request.GET.get("sort", "taken")
    return sort if sort in SORTS else "taken"


@login_required
@require_GET
def album_list(request):
    # Each album's count by the album page's own rule (photos of libraries the viewer sees now);
    # a user has a handful of albums, so a count each is cheap.
    albums = albums_visible_to(request.user)
    return render(request, "retrieval/album_list.html", {
        "albums": [(album, album_photos(album, request.user).count()) for album in albums],
    })


@login_required
@require_POST
def album_from_search(request, pk):
    search = get_object_or_404(Search, pk=pk, user=request.user)
    try:
        album = create_album_from_search(request.user, search, request.POST.get("name", ""))
    except AlbumError as exc:
        messages.error(request, str(exc))
        return redirect("search-detail", pk=search.pk)
    return redirect("album-detail", pk=album.pk)


@login_required
@require_GET
def album_detail(request, pk):
    album = _album(request, pk)
    sort, size = _sort(request), page_size_from(request)
    photos = album_photos(album, request.user, sort)
    page = Paginator(photos, size).get_page(request.GET.get("page"))
    return render(request, "retrieval/album_detail.html", {
        "album": album, "page": page, "sort": sort, "size": size, "page_sizes": PAGE_SIZES, "total": photos.count(),
        "is_owner": album.user_id == request.user.pk,
    })


@login_required
@require_GET
def album_export(request, pk, kind):
    """The album's photos as CSV or a ZIP of their originals (with XMP sidecars when
    `?sidecars=1`), streamed (assets.export); a shared album's holds the viewer's libraries only."""
    album = _album(request, pk)
    sidecars = album_sidecar_keywords(album) if request.GET.get("sidecars") == "1" else None
    return export_response(album_export_rows(album, request.user), kind, album_export_name(album), sidecars)


@login_required
@require_POST
def album_photo_state(request, pk, asset_id):
    album = _own_album(request, pk)
    state = request.POST.get("state", "")
    try:
        photo = set_photo_state(album, asset_id, state)
    except AlbumError as exc:
        messages.error(request, str(exc))
    else:
        if photo is None:
            messages.info(request, "It scores below the cutoff, so it is not in the album now.")
    back = request.POST.get("next", "")
    return redirect(back if back.startswith("/") and not back.startswith("//") else f"/albums/{album.pk}/")


@login_required
@require_GET
def album_audit(request, pk):
    album = _album(request, pk)
    return render(request, "retrieval/album_audit.html", {
        "album": album, "audit": audit(album, request.user), "states": AlbumPhoto.State,
        "is_owner": album.user_id == request.user.pk,
    })


@login_required
@require_POST
def album_delete(request, pk):
    album = _own_album(request, pk)
    delete_album(album)
    messages.success(request, f"Album “{album.name}” deleted; its photos stay in their libraries.")
    return redirect("album-list")


@login_required
@require_POST
def album_share(request, pk):
    """Share the album read-only with the members of its libraries, or stop sharing it."""
    album = change_album(_own_album(request, pk), shared=request.POST.get("shared") == "1")
    messages.success(request, "Shared read-only with the members of its libraries." if album.shared
                     else "No longer shared.")
    return redirect("album-detail", pk=album.pk)
