"""Creating searches: the request type the pages and the API share, validated once, then stored
and queued.

A search is a row first (so the user has something to watch) and a task second, queued when
the row is committed. Refinements are new searches that point at their parent: they keep its
proxies, so re-ranking never regenerates what exists.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import File
from django.db import transaction

from assets.imaging import FileRejected, inspect_image, too_large
from assets.models import Asset
from assets.permissions import libraries_visible_to
from retrieval.engine.profiles import PROFILES

from ..indexing.spaces import serving_space
from ..models import Search, SearchExample
from .limits import check_search_quota
from .query import MAX_QUERY_LENGTH, clean_text
from .tasks import queue_search

K_RANGE = (1, 16)


class SearchInputError(ValueError):
    """Bad search input: `errors` maps a field name to its messages (a 400 for the API)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


# The request types of the pages and the API: their fields are the names the clients send (the
# API's JSON fields, the forms' inputs), so every error names the field the client sent.


@dataclass
class SearchRequest:
    text: str = ""
    libraries: list[int] = field(default_factory=list)  # empty: every library the user may see
    k: int | None = None  # None: the profile's
    seed: int = 0
    lambda_override: float | None = None
    text_only: bool = False
    # Photos to search by (extra proxies); with no text, a search by example alone.
    examples: list[int] = field(default_factory=list)


@dataclass
class Refinement:
    disabled_proxies: list[int] = field(default_factory=list)
    positive_assets: list[int] = field(default_factory=list)
    negative_assets: list[int] = field(default_factory=list)
    negative_text: str = ""
    positive_uploads: list = field(default_factory=list)  # uploaded files (pages only)
    negative_uploads: list = field(default_factory=list)


def _clean_text(text: str, name: str, errors: dict) -> str:
    text = clean_text(text)
    if len(text) > MAX_QUERY_LENGTH:
        errors.setdefault(name, []).append(f"At most {MAX_QUERY_LENGTH} characters (this has {len(text)}).")
    return text


def _default_k() -> int:
    space = serving_space()
    profile = PROFILES.get(space.profile) if space else None
    return profile.k if profile else 4


def create_search(user, request: SearchRequest) -> Search:
    """Validate, store and queue a search; raises SearchInputError on bad input."""
    errors: dict[str, list[str]] = {}
    text = _clean_text(request.text, "text", errors)
    if not text and not request.examples:
        errors.setdefault("text", []).append("Type what to search for (a category such as “sailboat”).")
    if not text and request.text_only:
        errors.setdefault("text_only", []).append("A text-only search needs a text.")
    _check_assets(user, "examples", request.examples, errors)
    k = request.k if request.k is not None else _default_k()
    if not K_RANGE[0] <= k <= K_RANGE[1]:
        errors.setdefault("k", []).append(f"K (proxy images) must be between {K_RANGE[0]} and {K_RANGE[1]}.")
    if not 0 <= request.seed < 2**63:
        errors.setdefault("seed", []).append("The seed must be a non-negative integer.")
    if request.lambda_override is not None and not 0.0 <= request.lambda_override <= 1.0:
        errors.setdefault("lambda_override", []).append("λ must be between 0 (text only) and 1 (images only).")
    visible = set(libraries_visible_to(user).values_list("pk", flat=True))
    unknown = [pk for pk in request.libraries if pk not in visible]
    if unknown:
        # Same answer whether the library exists or not: nothing leaks.
        errors.setdefault("libraries", []).append(f"No such library: {', '.join(map(str, unknown))}.")
    if errors:
        raise SearchInputError(errors)
    check_search_quota(user, text, request.seed, k, request.text_only)
    with transaction.atomic():
        search = Search.objects.create(
            user=user, text=text, k=k, seed=request.seed, lambda_override=request.lambda_override,
            text_only=request.text_only, top_n=settings.CLETIR_SEARCH_TOP_N,
        )
        search.libraries.set(request.libraries)
        search.positive_assets.set(request.examples)
        transaction.on_commit(lambda: queue_search(search))
    return search


def _check_assets(user, name: str, ids: list[int], errors: dict) -> None:
    """Photos must be in libraries the user sees; others are reported like missing ones."""
    if not ids:
        return
    visible = Asset.objects.filter(library__in=libraries_visible_to(user), pk__in=ids)
    found = set(visible.values_list("pk", flat=True))
    if len(found) != len(set(ids)):
        errors.setdefault(name, []).append("No such photo: " + ", ".join(str(i) for i in ids if i not in found) + ".")


def refine_search(parent: Search, user, refinement: Refinement) -> Search:
    """A new search from `parent` with proxies switched off, examples or negatives added."""
    errors: dict[str, list[str]] = {}
    negative_text = _clean_text(refinement.negative_text, "negative_text", errors)
    k = parent.k
    bad = [i for i in refinement.disabled_proxies if not 0 <= i < k]
    if bad:
        errors.setdefault("disabled_proxies", []).append(f"Proxy numbers run from 0 to {k - 1}.")
    _check_assets(user, "positive_assets", refinement.positive_assets, errors)
    _check_assets(user, "negative_assets", refinement.negative_assets, errors)
    if not parent.text and not (refinement.positive_assets or refinement.positive_uploads):
        errors.setdefault("positive_assets", []).append("A search by example needs at least one example photo.")
    if errors:
        raise SearchInputError(errors)
    with transaction.atomic():
        search = Search.objects.create(
            user=user, text=parent.text, k=k, seed=parent.seed, lambda_override=parent.lambda_override,
            text_only=parent.text_only, top_n=parent.top_n, parent=parent,
            disabled_proxies=sorted(set(refinement.disabled_proxies)), negative_text=negative_text,
        )
        search.libraries.set(parent.libraries.all())
        search.positive_assets.set(refinement.positive_assets)
        search.negative_assets.set(refinement.negative_assets)
        for kind, uploads in ((SearchExample.Kind.POSITIVE, refinement.positive_uploads),
                              (SearchExample.Kind.NEGATIVE, refinement.negative_uploads)):
            for upload in uploads:
                SearchExample.objects.create(search=search, kind=kind, file=_validated_example(upload))
        transaction.on_commit(lambda: queue_search(search))
    return search


def _validated_example(upload) -> File:
    """An uploaded example photo, checked like any photo upload (same limits and reasons)."""
    try:
        if upload.size > settings.CLETIR_MAX_UPLOAD_BYTES:
            raise too_large(settings.CLETIR_MAX_UPLOAD_BYTES)
        with tempfile.NamedTemporaryFile(suffix=".upload") as spool:
            for chunk in upload.chunks():
                spool.write(chunk)
            spool.flush()
            inspect_image(spool.name)
    except FileRejected as rejection:
        raise SearchInputError({"examples": [f"{upload.name}: {rejection.message}"]}) from None
    upload.seek(0)
    return File(upload, name="example")
