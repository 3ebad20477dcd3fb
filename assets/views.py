"""Pages of photo libraries: list, create, gallery, photo detail, members, and file serving."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .forms import LibraryForm, MemberForm
from .models import PHOTO_SORTS, Asset, LibraryMembership, Rendition
from .permissions import Access, libraries_visible_to, library_for
from .photo_counts import with_photo_counts
from .serving import login_or_token_required, serve_file
from .services import DeleteBusy, delete_library

PAGE_SIZES = (24, 48, 96, 200)
# Formats every browser shows in an <img>; a photo in another one (HEIC, TIFF) is shown through
# its preview only.
BROWSER_FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}


def page_size_from(request) -> int:
    try:
        size = int(request.GET.get("size", 48))
    except ValueError:
        return 48
    return size if size in PAGE_SIZES else 48


def _library_list(request, form: LibraryForm, status: int = 200):
    libraries = with_photo_counts(libraries_visible_to(request.user).select_related("owner")).order_by("name", "id")
    return render(request, "assets/library_list.html", {"libraries": libraries, "form": form}, status=status)


@login_required
def library_list(request):
    return _library_list(request, LibraryForm(owner=request.user))


@login_required
@require_POST
def library_create(request):
    form = LibraryForm(request.POST, owner=request.user)
    if form.is_valid():
        library = form.save(commit=False)
        library.owner = request.user
        library.save()
        messages.success(request, f"Library “{library.name}” created. Add photos below.")
        return redirect("library-detail", pk=library.pk)
    return _library_list(request, form, status=400)


@login_required
@require_GET
def library_detail(request, pk):
    library, access = library_for(request.user, pk)
    sort = request.GET.get("sort", "newest")
    if sort not in PHOTO_SORTS:
        sort = "newest"
    size = page_size_from(request)
    photos = (
        library.assets.order_by(*PHOTO_SORTS[sort])
        .prefetch_related(Prefetch("renditions", queryset=Rendition.objects.filter(name="thumb"), to_attr="thumbs"))
    )
    page = Paginator(photos, size).get_page(request.GET.get("page"))
    return render(request, "assets/library_detail.html", {
        "library": library,
        "page": page,
        "sort": sort,
        "size": size,
        "page_sizes": PAGE_SIZES,
        "can_edit": access >= Access.EDIT,
        "is_owner": access >= Access.OWN,
        "rejected": library.rejected_files.all()[:20],
        "rejected_count": library.rejected_files.count(),
        "memberships": library.memberships.select_related("user").order_by("user__username"),
        "member_form": MemberForm(library=library),
        "rename_form": LibraryForm(instance=library),
    })


@login_required
@require_POST
def library_rename(request, pk):
    library, _ = library_for(request.user, pk, Access.OWN)
    form = LibraryForm(request.POST, instance=library)
    if form.is_valid():
        form.save()
        messages.success(request, f"Renamed to “{library.name}”.")
    else:
        messages.error(request, " ".join(form.errors.get("name", ["Invalid name."])))
    return redirect("library-detail", pk=library.pk)


@login_required
def library_delete(request, pk):
    library, _ = library_for(request.user, pk, Access.OWN)
    status = 200
    if request.method == "POST":
        name = library.name
        try:
            count = delete_library(library)
        except DeleteBusy as busy:
            messages.error(request, f"“{name}” was not deleted. {busy.message}")
            status = 409
        else:
            messages.success(request, f"Deleted “{name}” and its {count} photos.")
            return redirect("home")
    return render(request, "assets/library_confirm_delete.html",
                  {"library": library, "photo_count": library.assets.count()}, status=status)


@login_required
@require_POST
def member_add(request, pk):
    library, _ = library_for(request.user, pk, Access.OWN)
    form = MemberForm(request.POST, library=library)
    if form.is_valid():
        LibraryMembership.objects.update_or_create(
            library=library, user=form.user, defaults={"role": form.cleaned_data["role"]}
        )
        messages.success(request, f"{form.user.username} is now a {form.cleaned_data['role']} of this library.")
    else:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    return redirect(reverse("library-detail", args=[library.pk]) + "#members")


@login_required
@require_POST
def member_remove(request, pk, user_id):
    library, _ = library_for(request.user, pk, Access.OWN)
    LibraryMembership.objects.filter(library=library, user_id=user_id).delete()
    messages.success(request, "Member removed.")
    return redirect(reverse("library-detail", args=[library.pk]) + "#members")


@login_required
@require_GET
def asset_detail(request, pk, asset_id):
    library, access = library_for(request.user, pk)
    asset = get_object_or_404(Asset.objects.prefetch_related("renditions"), pk=asset_id, library=library)
    if "preview" in {r.name for r in asset.renditions.all()} or asset.format not in BROWSER_FORMATS:
        # The preview, or its placeholder while it is made: a browser cannot show HEIC or TIFF.
        image_url = reverse("asset-rendition", args=[asset.pk, "preview"])
    else:
        image_url = reverse("asset-file", args=[asset.pk])  # the original, until the preview exists
    return render(request, "assets/asset_detail.html", {
        "library": library, "asset": asset, "image_url": image_url, "can_edit": access >= Access.EDIT,
    })


@login_or_token_required
@require_GET
def asset_file(request, asset_id, variant="original"):
    """A photo's original or one of its renditions, after the permission check.

    Files are never served from a public media URL: knowing a photo's id is not enough.
    """
    asset = Asset.objects.select_related("library").filter(pk=asset_id).first()
    if asset is None:
        raise Http404("No such photo.")
    library_for(request.user, asset.library_id)  # 404 for anyone who can't see the library
    if variant == "original":
        return serve_file(asset.file)
    rendition = asset.renditions.filter(name=variant).first()
    if rendition is not None:
        return serve_file(rendition.file)
    if variant not in settings.CLETIR_RENDITIONS:
        raise Http404("No such rendition.")
    return rendition_placeholder(request, asset)


def rendition_placeholder(request, asset: Asset) -> HttpResponse:
    """What an <img> of a rendition not made yet shows: a grey tile saying so, never a broken image.

    `no-store`, so the browser asks again next time and gets the rendition once it exists;
    `X-Rendition-Status` tells scripts and API clients which it is.
    """
    failed = asset.status == Asset.Status.FAILED
    response = render(request, "assets/rendition_placeholder.svg",
                      {"label": "no preview" if failed else "processing…"}, content_type="image/svg+xml")
    response["Cache-Control"] = "no-store"
    response["X-Rendition-Status"] = "failed" if failed else "pending"
    return response
