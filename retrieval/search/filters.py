"""Filters on what a photo says about itself, applied inside a search's scope (issue 16).

A search, and an album saved from it, may keep only photos captured in a date range, by a
camera, carrying some embedded keywords, or of some file types. The filters become a queryset
of assets (`PhotoFilters.photos`) that the ranking takes as part of its scope
(`ranking.scope.Scope(library_ids, photos=...)`): they decide which photos are ranked at all,
so no photo inside them is lost behind a top N of photos outside them.

The rules, as the pages say them:

* Dates are calendar days in the site's time zone (TIME_ZONE), both ends included. A photo
  with no capture time (no EXIF date) is placed by its upload time instead.
* Camera make and model: the text appears in what the photo's EXIF says, in any case
  ("canon" keeps "Canon Inc.").
* Keywords: every keyword given is among the photo's embedded keywords, compared in the form
  they are stored in (`assets.metadata.normalise_keyword`: case and spacing do not matter).
* File types: the stored format (JPEG, PNG, WEBP, TIFF, GIF, HEIF), or a file suffix naming
  one ("jpg", "heic").
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

from django.db.models import Q, QuerySet
from django.utils import timezone

from assets.imaging import ACCEPTED_FORMATS
from assets.metadata import MAX_KEYWORD, normalise_keyword
from assets.models import Asset

from .ranking.scope import Scope

MAX_FILTER_KEYWORDS = 10
MAX_CAMERA_TEXT = 100
# What a client may call a file type -> the format stored on the photo (Asset.format).
FORMAT_NAMES: dict[str, str] = {
    **{suffix.upper(): stored for stored, suffix in ACCEPTED_FORMATS.values()},
    **{stored: stored for stored, _ in ACCEPTED_FORMATS.values()},
    "JPG": "JPEG", "JPE": "JPEG", "HEIC": "HEIF", "TIF": "TIFF",
}
STORED_FORMATS: tuple[str, ...] = tuple(sorted({stored for stored, _ in ACCEPTED_FORMATS.values()}))
DATE_RULE = "capture date; a photo without one by its upload date"


class FilterInputError(ValueError):
    """Bad filter input: `errors` maps the field to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class PhotoFilters:
    taken_from: dt.date | None = None
    taken_to: dt.date | None = None  # inclusive
    camera_make: str = ""
    camera_model: str = ""
    keywords: tuple[str, ...] = ()  # normalised, unique, in the order given
    formats: tuple[str, ...] = ()  # stored format names, sorted

    @classmethod
    def parse(cls, taken_from: dt.date | None = None, taken_to: dt.date | None = None, camera_make: str = "",
              camera_model: str = "", keywords=(), formats=()) -> PhotoFilters:
        """Filters from a client's values (types already parsed); raises FilterInputError naming
        every field that is wrong."""
        errors: dict[str, list[str]] = {}
        if taken_from and taken_to and taken_from > taken_to:
            errors["taken_from"] = [f"The first day ({taken_from.isoformat()}) is after the last ({taken_to.isoformat()})."]
        cameras = {}
        for name, text in (("camera_make", camera_make), ("camera_model", camera_model)):
            cameras[name] = " ".join((text or "").split())
            if len(cameras[name]) > MAX_CAMERA_TEXT:
                errors[name] = [f"At most {MAX_CAMERA_TEXT} characters (this has {len(cameras[name])})."]
        given = [k for k in (normalise_keyword(str(k)) for k in keywords or ()) if k]
        too_long = [k for k in (" ".join(str(k).split()) for k in keywords or ()) if len(k) > MAX_KEYWORD]
        if too_long:
            errors["keywords"] = [f"A keyword has at most {MAX_KEYWORD} characters: “{too_long[0][:20]}…” is longer."]
        unique = tuple(dict.fromkeys(given))
        if len(unique) > MAX_FILTER_KEYWORDS:
            errors.setdefault("keywords", []).append(f"At most {MAX_FILTER_KEYWORDS} keywords (this has {len(unique)}).")
        unknown = [f for f in formats or () if str(f).strip().upper() not in FORMAT_NAMES]
        if unknown:
            errors["formats"] = [f"Unknown file type: {', '.join(map(str, unknown))}. One of: {', '.join(STORED_FORMATS)}."]
        if errors:
            raise FilterInputError(errors)
        return cls(taken_from=taken_from or None, taken_to=taken_to or None, keywords=unique,
                   formats=tuple(sorted({FORMAT_NAMES[str(f).strip().upper()] for f in formats or ()})), **cameras)

    @classmethod
    def from_json(cls, data: dict | None) -> PhotoFilters:
        """The filters a search or an album stored (`to_json`); missing keys are no filter."""
        data = data or {}
        day = lambda key: dt.date.fromisoformat(data[key]) if data.get(key) else None  # noqa: E731
        return cls(taken_from=day("taken_from"), taken_to=day("taken_to"), camera_make=data.get("camera_make", ""),
                   camera_model=data.get("camera_model", ""), keywords=tuple(data.get("keywords", ())),
                   formats=tuple(data.get("formats", ())))

    def to_json(self) -> dict:
        """The filters set, as JSON values (dates as YYYY-MM-DD); {} when none is."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value:
                out[f.name] = value.isoformat() if isinstance(value, dt.date) else list(value) if isinstance(value, tuple) else value
        return out

    @property
    def is_empty(self) -> bool:
        return not self.to_json()

    def photos(self) -> QuerySet[Asset] | None:
        """The photos these filters keep (of every library: the scope adds its libraries), or
        None when they keep everything."""
        if self.is_empty:
            return None
        photos = Asset.objects.all()
        if self.taken_from or self.taken_to:
            photos = photos.filter(self._dates())
        if self.camera_make:
            photos = photos.filter(camera_make__icontains=self.camera_make)
        if self.camera_model:
            photos = photos.filter(camera_model__icontains=self.camera_model)
        if self.keywords:
            photos = photos.filter(keywords__contains=list(self.keywords))
        if self.formats:
            photos = photos.filter(format__in=self.formats)
        return photos

    def _dates(self) -> Q:
        # Two conditions rather than Coalesce(taken_at, created_at), so each can use its index.
        bounds = {}
        if self.taken_from:
            bounds["gte"] = _start_of(self.taken_from)
        if self.taken_to:
            bounds["lt"] = _start_of(self.taken_to + dt.timedelta(days=1))
        taken = {f"taken_at__{op}": when for op, when in bounds.items()}
        uploaded = {f"created_at__{op}": when for op, when in bounds.items()}
        return Q(**taken) | Q(taken_at__isnull=True, **uploaded)

    def summary(self) -> str:
        """The filters in words, for pages ("" when none)."""
        parts = []
        if self.taken_from or self.taken_to:
            if self.taken_from and self.taken_to:
                days = (f"on {self.taken_from.isoformat()}" if self.taken_from == self.taken_to
                        else f"{self.taken_from.isoformat()} to {self.taken_to.isoformat()}")
            else:
                days = f"from {self.taken_from.isoformat()}" if self.taken_from else f"up to {self.taken_to.isoformat()}"
            parts.append(f"taken {days} (uploaded, for photos without a capture date)")
        if self.camera_make:
            parts.append(f"camera make contains “{self.camera_make}”")
        if self.camera_model:
            parts.append(f"camera model contains “{self.camera_model}”")
        if self.keywords:
            parts.append("keywords: " + ", ".join(f"“{k}”" for k in self.keywords))
        if self.formats:
            parts.append("file type: " + ", ".join(self.formats))
        return " · ".join(parts)


def filtered_scope(library_ids, stored_filters: dict | None) -> Scope:
    """The photos of these libraries that stored filters (`PhotoFilters.to_json`) keep: the
    scope a search ranks, and an album is made, scored and audited in."""
    return Scope(tuple(sorted(library_ids)), photos=PhotoFilters.from_json(stored_filters).photos())


def _start_of(day: dt.date) -> dt.datetime:
    """Midnight starting `day` in the site's time zone."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min), timezone.get_default_timezone())
