"""Creating searches: the request type the pages and the API share, validated once, then stored
and queued.

A search is a row first (so the user has something to watch) and a task second, queued when
the row is committed. Refinements are new searches that point at their parent: they keep its
proxies, so re-ranking never regenerates what exists.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.db import transaction

from assets.imaging import FileRejected, inspect_image, too_large
from assets.media import new_incoming_file, remove_quietly
from assets.models import Asset
from assets.permissions import libraries_visible_to
from retrieval.engine.profiles import PROFILES

from ..indexing.spaces import serving_space
from ..models import Search, SearchExample
from .filters import FilterInputError, PhotoFilters
from .limits import check_search_quota
from .query import MAX_QUERY_LENGTH, clean_text
from .results import visible_photos
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
    # Filters inside the scope (retrieval.search.filters): only these photos are ranked.
    taken_from: dt.date | None = None
    taken_to: dt.date | None = None  # inclusive
    camera_make: str = ""
    camera_model: str = ""
    keywords: list[str] = field(default_factory=list)  # all of them
    formats: list[str] = field(default_factory=list)  # any of them

    def photo_filters(self, errors: dict[str, list[str]]) -> PhotoFilters:
        """The request's filters; what is wrong with them goes into `errors`."""
        try:
            return PhotoFilters.parse(self.taken_from, self.taken_to, self.camera_make, self.camera_model,
                                      self.keywords, self.formats)
        except FilterInputError as exc:
            errors.update(exc.errors)
            return PhotoFilters()


@dataclass
class Refinement:
    """A refinement starts from everything its parent search had: a field left None keeps the
    parent's value (its switched-off proxies, example and negative photos, negative text and
    uploaded examples); a given field is the new complete value."""

    disabled_proxies: list[int] | None = None
    positive_assets: list[int] | None = None
    negative_assets: list[int] | None = None
    negative_text: str | None = None
    kept_examples: list[int] | None = None  # ids of the parent's uploaded examples to keep
    positive_uploads: list = field(default_factory=list)  # new uploaded files (pages only)
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
    filters = request.photo_filters(errors)
    if errors:
        raise SearchInputError(errors)
    check_search_quota(user, text, request.seed, k, request.text_only)
    with transaction.atomic():
        search = Search.objects.create(
            user=user, text=text, k=k, seed=request.seed, lambda_override=request.lambda_override,
            text_only=request.text_only, top_n=settings.CLETIR_SEARCH_TOP_N, filters=filters.to_json(),
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
    """A new search from `parent`: its proxies (never generated again) with what `refinement`
    changes; everything else as the parent had it."""
    errors: dict[str, list[str]] = {}
    inherited = _inherited(parent, user)
    wanted = {name: inherited[name] if value is None else value for name, value in (
        ("disabled_proxies", refinement.disabled_proxies), ("positive_assets", refinement.positive_assets),
        ("negative_assets", refinement.negative_assets), ("negative_text", refinement.negative_text),
        ("kept_examples", refinement.kept_examples))}
    negative_text = _clean_text(wanted["negative_text"], "negative_text", errors)
    k = parent.k
    if [i for i in wanted["disabled_proxies"] if not 0 <= i < k]:
        errors.setdefault("disabled_proxies", []).append(f"Proxy numbers run from 0 to {k - 1}.")
    _check_assets(user, "positive_assets", wanted["positive_assets"], errors)
    _check_assets(user, "negative_assets", wanted["negative_assets"], errors)
    kept = [e for e in inherited["examples"] if e.pk in set(wanted["kept_examples"])]
    unknown = sorted(set(wanted["kept_examples"]) - {e.pk for e in inherited["examples"]})
    if unknown:
        errors.setdefault("kept_examples", []).append(f"No such example of this search: {', '.join(map(str, unknown))}.")
    uploads = {kind: _validated_examples(name, files, errors) for kind, name, files in (
        (SearchExample.Kind.POSITIVE, "positive_uploads", refinement.positive_uploads),
        (SearchExample.Kind.NEGATIVE, "negative_uploads", refinement.negative_uploads))}
    has_example = (wanted["positive_assets"] or uploads[SearchExample.Kind.POSITIVE]
                   or any(e.kind == SearchExample.Kind.POSITIVE for e in kept))
    if not parent.text and not has_example:
        errors.setdefault("positive_assets", []).append("A search by example needs at least one example photo.")
    if errors:
        raise SearchInputError(errors)
    with transaction.atomic():
        search = Search.objects.create(
            user=user, text=parent.text, k=k, seed=parent.seed, lambda_override=parent.lambda_override,
            text_only=parent.text_only, top_n=parent.top_n, parent=parent,
            disabled_proxies=sorted(set(wanted["disabled_proxies"])), negative_text=negative_text,
            filters=dict(parent.filters),
        )
        search.libraries.set(parent.libraries.all())
        search.positive_assets.set(wanted["positive_assets"])
        search.negative_assets.set(wanted["negative_assets"])
        for example in kept:  # a copy each: every search owns (and deletes) its own files
            with example.file.open("rb") as source:
                SearchExample.objects.create(search=search, kind=example.kind, file=ContentFile(source.read(), "example"))
        for kind, files in uploads.items():
            for upload in files:
                SearchExample.objects.create(search=search, kind=kind, file=File(upload, name="example"))
        transaction.on_commit(lambda: queue_search(search))
    return search


def _inherited(parent: Search, user) -> dict:
    """What a refinement of `parent` starts from (example photos of libraries `user` may see now)."""
    return {
        "disabled_proxies": list(parent.disabled_proxies),
        "positive_assets": list(visible_photos(parent.positive_assets, user).values_list("pk", flat=True)),
        "negative_assets": list(visible_photos(parent.negative_assets, user).values_list("pk", flat=True)),
        "negative_text": parent.negative_text,
        "examples": list(parent.examples.order_by("pk")),
        "kept_examples": list(parent.examples.values_list("pk", flat=True)),
    }


def _validated_examples(name: str, uploads: list, errors: dict) -> list:
    """Uploaded example photos, each checked like any photo upload (same limits and reasons);
    every refused file is reported under `name`, not only the first."""
    valid = []
    for upload in uploads:
        try:
            if upload.size > settings.CLETIR_MAX_UPLOAD_BYTES:
                raise too_large(settings.CLETIR_MAX_UPLOAD_BYTES)
            _inspect_upload(upload)
        except FileRejected as rejection:
            errors.setdefault(name, []).append(f"{upload.name}: {rejection.message}")
            continue
        upload.seek(0)
        valid.append(upload)
    return valid


def _inspect_upload(upload) -> None:
    """Check an uploaded file as an image where it lies (a large upload is spooled to disk by
    Django), or through a temporary file under MEDIA_ROOT/incoming, which the sweeper cleans."""
    if hasattr(upload, "temporary_file_path"):
        inspect_image(upload.temporary_file_path())
        return
    fd, path = new_incoming_file()
    try:
        with os.fdopen(fd, "wb") as spool:
            for chunk in upload.chunks():
                spool.write(chunk)
        inspect_image(path)
    finally:
        remove_quietly(path)
