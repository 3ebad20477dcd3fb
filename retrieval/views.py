"""Search pages: the query form, a search's state, its proxies and ranked results, refining."""
from __future__ import annotations

from collections import Counter

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from assets.export import export_response
from assets.permissions import libraries_visible_to
from assets.serving import login_or_token_required, serve_file
from assets.views import PAGE_SIZES, page_size_from

from .models import ProxyImage, Search, SearchExample
from .search.export import search_export_name, search_export_rows
from .search.filters import DATE_RULE, STORED_FORMATS, PhotoFilters
from .search.limits import RateLimited
from .search.results import matching_results, visible_photos
from .search.service import Refinement, SearchInputError, SearchRequest, create_search, refine_search
from .serializers import SearchCreateSerializer, SearchRefineSerializer


def _int_list(values) -> list[int]:
    return [int(v) for v in values if str(v).strip().isdigit()]


def _errors(serializer) -> dict[str, list[str]]:
    return {name: [str(message) for message in messages] for name, messages in serializer.errors.items()}


FILTER_FIELDS = ("taken_from", "taken_to", "camera_make", "camera_model", "keywords", "formats")


def _form_of(search: Search) -> dict:
    """The search form filled with what `search` asked for (to search again, changed)."""
    filters = PhotoFilters.from_json(search.filters)
    return {
        "text": search.text, "k": str(search.k), "seed": str(search.seed),
        "lambda_override": "" if search.lambda_override is None else repr(search.lambda_override),
        "libraries": list(search.libraries.values_list("pk", flat=True)), "text_only": search.text_only,
        "taken_from": filters.taken_from.isoformat() if filters.taken_from else "",
        "taken_to": filters.taken_to.isoformat() if filters.taken_to else "",
        "camera_make": filters.camera_make, "camera_model": filters.camera_model,
        "keywords": ", ".join(filters.keywords), "formats": list(filters.formats),
    }


def _form_data(post) -> tuple[dict, object]:
    """(The form as the page shows it again, the data for the serializer): keywords are typed
    comma-separated in one box."""
    form = {
        "text": post.get("text", ""), "k": post.get("k", ""), "seed": post.get("seed", "0"),
        "lambda_override": post.get("lambda_override", ""),
        "libraries": _int_list(post.getlist("libraries")), "text_only": bool(post.get("text_only")),
        "examples": _int_list(post.getlist("examples")),
        **{name: post.get(name, "") for name in FILTER_FIELDS[:4]},
        "keywords": ", ".join(k.strip() for k in post.getlist("keywords") if k.strip()),
        "formats": [f.upper() for f in post.getlist("formats")],
    }
    data = post.copy()
    data.setlist("keywords", [k.strip() for typed in post.getlist("keywords") for k in typed.split(",") if k.strip()])
    return form, data


@login_required
def search_home(request):
    """The query form. It is read by the API's serializer and checked by the same service as
    the API, so the page and the API accept and refuse the same things with the same words.
    `?from=<search id>` fills it with what that search of yours asked for."""
    libraries = libraries_visible_to(request.user).order_by("name")
    status = None
    errors, form = {}, {"text": "", "k": "", "seed": "0", "lambda_override": "", "libraries": [], "text_only": False,
                        **{name: "" for name in FILTER_FIELDS}, "formats": []}
    source = request.GET.get("from", "")
    if request.method == "GET" and source.isdigit():
        form = _form_of(_own_search(request, int(source)))
    if request.method == "POST":
        form, data = _form_data(request.POST)
        parsed = SearchCreateSerializer(data=data)
        try:
            if not parsed.is_valid():
                raise SearchInputError(_errors(parsed))
            search = create_search(request.user, SearchRequest(**parsed.validated_data))
            return redirect("search-detail", pk=search.pk)
        except SearchInputError as exc:
            errors = exc.errors
        except RateLimited as exc:
            errors, status = {"text": [exc.message]}, 429
    recent = Search.objects.filter(user=request.user).order_by("-created_at")[:15]
    return render(request, "retrieval/search_home.html", {
        "libraries": libraries, "errors": errors, "form": form, "recent": recent, "formats": STORED_FORMATS,
        "date_rule": DATE_RULE, "filters_open": any(form.get(name) for name in FILTER_FIELDS)
                                                or any(name in errors for name in FILTER_FIELDS),
    }, status=status or (400 if errors else 200))


def _own_search(request, pk) -> Search:
    # Another user's search does not exist for you: 404, not 403.
    return get_object_or_404(Search.objects.select_related("proxy_set", "parent"), pk=pk, user=request.user)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _what_it_searches_by(search: Search, positives: list, negatives: list, examples: list) -> str:
    """What the search ranks by, in the archivist's words: the settings that mattered for this
    kind of search, never K and a seed for a search that generated no proxy, nor λ=0 for one
    that had no image half."""
    uploaded = Counter(example.kind for example in examples)
    liked = len(positives) + uploaded[SearchExample.Kind.POSITIVE]
    disliked = len(negatives) + uploaded[SearchExample.Kind.NEGATIVE]
    kept = search.k - len(set(search.disabled_proxies))
    images = True
    if not search.text:
        parts = [f"by example: {_count(liked, 'photo')}"]
    elif search.text_only:
        parts, images = ["text only (no proxy images)"], False
    else:
        if kept == 0 and not liked:
            parts, images = ["text only: every proxy switched off"], False
        elif kept == 0:
            parts = ["every proxy switched off"]
        else:
            proxies = f"{kept} of {search.k} proxy images" if kept < search.k else _count(search.k, "proxy image")
            parts = [f"text and {proxies} (seed {search.seed})"]
        if liked:
            parts.append(f"more like {_count(liked, 'photo')}")
    if disliked:
        parts.append(f"less like {_count(disliked, 'photo')}")
    if search.negative_text:
        parts.append(f"not “{search.negative_text}”")
    if search.text and images:
        if search.lambda_used is not None:
            how = {"trained": "trained aggregator", "mean": "images averaged"}.get(search.aggregation, search.aggregation)
            parts.append(f"λ={search.lambda_used:.2f} ({how})")
        elif search.lambda_override is not None:
            parts.append(f"λ={search.lambda_override:.2f} (set by hand)")
    return " · ".join(parts)


@login_required
@require_GET
def search_detail(request, pk):
    search = _own_search(request, pk)
    size = page_size_from(request)
    matches_only, sort = request.GET.get("matches_only") == "1", request.GET.get("sort", "")
    results = matching_results(search, request.user, matches_only, sort)
    page = Paginator(results, size).get_page(request.GET.get("page"))
    proxies = list(search.proxy_set.images.all()) if search.proxy_set else []
    positives = list(visible_photos(search.positive_assets, request.user))
    negatives = list(visible_photos(search.negative_assets, request.user))
    examples = list(search.examples.all())
    return render(request, "retrieval/search_detail.html", {
        "search": search, "page": page, "size": size, "page_sizes": PAGE_SIZES, "proxies": proxies,
        "matches_only": matches_only, "sort": sort if matches_only else "",
        "disabled": set(search.disabled_proxies), "examples": examples,
        "positives": positives, "negatives": negatives,
        "positive_ids": {a.pk for a in positives}, "negative_ids": {a.pk for a in negatives},
        "searches_by": _what_it_searches_by(search, positives, negatives, examples),
        "filters_summary": PhotoFilters.from_json(search.filters).summary(),
        # The "generating" state of a search that makes no proxy images (text only, by example,
        # a refinement reusing its parent's) is its first step, not a generation.
        "generating_label": ("Generating proxies" if search.text and not search.text_only
                             and (search.parent_id is None or search.negative_text) else "Preparing the query"),
    })


@login_required
@require_GET
def search_export(request, pk, kind):
    """The matches as CSV or a ZIP of their originals, streamed (assets.export)."""
    search = _own_search(request, pk)
    return export_response(search_export_rows(search, request.user), kind, search_export_name(search))


@login_required
@require_POST
def search_refine(request, pk):
    parent = _own_search(request, pk)
    parsed = SearchRefineSerializer(data=request.POST)
    if not parsed.is_valid():
        return _refine_errors(request, parent, _errors(parsed))
    enabled = set(_int_list(request.POST.getlist("enabled_proxies")))
    values = dict(parsed.validated_data)
    if "examples_shown" in request.POST:
        # The page lists the earlier examples as ticked boxes: what comes back is the whole set
        # (a box unticked everywhere sends nothing).
        for name in ("positive_assets", "negative_assets", "kept_examples"):
            values.setdefault(name, [])
    refinement = Refinement(**{
        **values,
        "disabled_proxies": ([i for i in range(parent.k) if i not in enabled] if "proxies_shown" in request.POST
                             else list(parent.disabled_proxies)),
        "positive_uploads": request.FILES.getlist("positive_uploads"),
        "negative_uploads": request.FILES.getlist("negative_uploads"),
    })
    try:
        search = refine_search(parent, request.user, refinement)
    except SearchInputError as exc:
        return _refine_errors(request, parent, exc.errors)
    return redirect("search-detail", pk=search.pk)


def _refine_errors(request, parent: Search, errors: dict[str, list[str]]):
    for field, problems in errors.items():
        messages.error(request, f"{field.replace('_', ' ')}: {' '.join(problems)}")
    return redirect("search-detail", pk=parent.pk)


@login_or_token_required
@require_GET
def proxy_image(request, pk, index):
    """A proxy image of one of the user's searches (proxy sets are shared by searches, but
    reach a user only through a search of theirs)."""
    search = _own_search(request, pk)
    image = search.proxy_set.images.filter(index=index).first() if search.proxy_set else None
    if image is None or not image.file:  # no file yet: written after the ranking (search/proxies.py)
        raise Http404("No such proxy image.")
    return serve_file(image.file, "image/webp", cache_seconds=86400)


@login_or_token_required
@require_GET
def example_image(request, pk, example_id):
    search = _own_search(request, pk)
    example = get_object_or_404(search.examples, pk=example_id)
    return serve_file(example.file)


@require_GET
def admin_proxy_image(request, image_id):
    """Proxy images for the admin's proxy-set page (staff only)."""
    if not (request.user.is_authenticated and request.user.is_staff):
        raise PermissionDenied
    image = get_object_or_404(ProxyImage.objects.exclude(file=""), pk=image_id)
    return serve_file(image.file, "image/webp")
