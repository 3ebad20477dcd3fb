"""Smart albums: a search saved with its query vector and cutoff, kept up to date on indexing.

* Saving a search copies its query vector u, cutoff, scope and proxies; the album's photos are
  every photo of the scope scoring at least the cutoff (the whole scope, not only the search's
  stored top N).
* When photos are indexed, indexing announces them (`retrieval.indexing.signals.photos_indexed`,
  after its batch committed) and a task on the `default` queue scores them against each album
  of that space whose scope includes their library (u · e), in bulk: those at or above the
  cutoff join.
* Every score here is the exact float32 score of `retrieval.search.scores`, the very number the
  search stored and cut at: a saved album holds exactly the search's matches (of the photos
  still in its scope), and the audit page's "in" and "not in" agree with the cutoff it shows.
* Hand-made choices win over scores: a pinned photo stays whatever it scores, a removed photo
  keeps its row (state removed) so no rescoring or re-indexing brings it back. Either choice
  can be undone (state auto): the photo's score decides again.
* A search with no matches is not saved: its cutoff only says "above the best photo".
* Filters: an album keeps its search's filters (dates, camera, keywords, file types;
  `retrieval.search.filters`): its scope is its libraries narrowed by them (`album_scope`), for
  saving, for newly indexed photos and for the audit; a photo outside them joins only by hand.
* Read-time permissions: an album shows only photos of libraries its viewer may see *now*
  (`retrieval.search.scope`), whatever was stored when the photo joined.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q, QuerySet

from assets.media import record_removal, settle_quietly
from assets.models import Asset, Library

from ..models import Album, AlbumExample, AlbumPhoto, AssetEmbedding, EmbeddingSpace, Search
from ..search.cutoff import HISTOGRAM_BINS, fit_mixture
from ..search.filters import PhotoFilters, filtered_scope
from ..search.matches import query_from_bytes
from ..search.ranking import Scope
from ..search.ranking.base import ScopeScores
from ..search.ranking.exact import exact_at_least, exact_count, exact_neighbours
from ..search.ranking.pgvector import scope_scores
from ..search.results import SORTS
from ..search.scope import visible_library_ids
from ..search.score_chart import ScoreChart, chart_of
from ..search.scores import as_score, exact_parts

AUDIT_SIDE = 12


class AlbumError(ValueError):
    """An album that cannot be made or changed; the message is shown to the user."""


def album_library_ids(album: Album) -> list[int]:
    """The libraries the album covers now: its chosen ones its owner may see (all they may see
    when none were chosen)."""
    return visible_library_ids(album.user, album.libraries.values_list("pk", flat=True))


def album_scope(album: Album, library_ids: Sequence[int] | None = None) -> Scope:
    """The photos the album takes by score: those its filters keep of its libraries the owner
    may see now (or of `library_ids`): what a search of its recipe would rank, where albums are
    made, scored, audited and re-derived."""
    return filtered_scope(album_library_ids(album) if library_ids is None else library_ids, album.filters)


def kept_by_filters(album: Album, asset_ids: Sequence[int]) -> np.ndarray:
    """For each of these photos, whether the album's filters keep it (one query, none without filters)."""
    filtered = PhotoFilters.from_json(album.filters).photos()
    if filtered is None or not len(asset_ids):
        return np.ones(len(asset_ids), dtype=bool)
    kept = filtered.filter(pk__in=[int(pk) for pk in asset_ids]).values_list("pk", flat=True)
    return np.isin(np.asarray(asset_ids, dtype=np.int64), np.fromiter(kept, dtype=np.int64))


def viewable_library_ids(album: Album, viewer) -> list[int]:
    """The album's libraries that `viewer` may see now (the owner, or staff in the admin)."""
    return sorted(set(visible_library_ids(viewer)) & set(album_library_ids(album)))


# What an album keeps of its search's recipe besides its libraries, photos and uploads (copied
# field by field when it is saved; retrieval.albums.derive makes the query again from them).
RECIPE_FIELDS = ("text", "k", "seed", "lambda_override", "text_only", "negative_text", "disabled_proxies",
                 "filters")


def create_album_from_search(user, search: Search, name: str) -> Album:
    if search.user_id != user.pk:
        raise AlbumError("No such search.")
    if search.status != Search.Status.DONE or search.query_vector is None or search.match_cutoff is None:
        raise AlbumError("Only a finished search with a match estimate can be saved as an album.")
    if not search.match_count:
        # With no match the cutoff is only "above the best photo": an album would start empty
        # and take in whatever later photo scores a hair higher, which is no category.
        raise AlbumError("This search has no clear matches, so there is nothing to keep as an album; "
                         "refine it until it finds some.")
    name = (name or "").strip() or (search.text or "Search by example")
    with transaction.atomic():
        album = Album.objects.create(
            user=user, name=name[:200], space=search.space, query_vector=bytes(search.query_vector),
            cutoff=search.match_cutoff, source_search=search, proxy_set=search.proxy_set,
            **{field: getattr(search, field) for field in RECIPE_FIELDS},
        )
        album.libraries.set(search.libraries.all())
        album.positive_assets.set(search.positive_assets.all())
        album.negative_assets.set(search.negative_assets.all())
        for example in search.examples.order_by("pk"):  # a copy each: the album owns (and deletes) its files
            with example.file.open("rb") as source:
                AlbumExample.objects.create(album=album, kind=example.kind, file=ContentFile(source.read(), "example"))
        if album.space is not None:
            add_scope_members(album, album.space, query_from_bytes(album.query_vector), album.cutoff)
    return album


def add_scope_members(album: Album, space: EmbeddingSpace, u: np.ndarray, cutoff: float) -> dict[int, float]:
    """Every photo of the album's scope scoring at least `cutoff` in `space` joins (state auto;
    rows already there keep their state). Returns {asset id: score} of those photos."""
    fast = scope_scores(space, u, album_scope(album))
    ids, scores = exact_at_least(fast, cutoff, u, space.vlm_dim)
    members = {int(a): float(s) for a, s in zip(ids, scores)}
    AlbumPhoto.objects.bulk_create([AlbumPhoto(album=album, asset_id=a, score=s) for a, s in members.items()],
                                   batch_size=2000, ignore_conflicts=True)
    return members


def delete_album(album: Album) -> None:
    """Delete an album with its own files (its uploaded examples), once the rows are gone."""
    with transaction.atomic():
        pending = record_removal(album.examples.values_list("file", flat=True))
        album.delete()
        transaction.on_commit(partial(settle_quietly, pending))


def add_indexed_photos(space: EmbeddingSpace, assets: Sequence[Asset], vectors: np.ndarray) -> int:
    """Score photos just indexed into `space` against its albums; returns the rows added.

    `vectors` are the photos' e = [I; V]; they are rounded to half precision first, as the
    halfvec column stores them, and scored exactly (`retrieval.search.scores`): the score the
    search that made the album would have given them.
    Existing rows keep their state: pinned stay, removed stay out; an automatic member that a
    re-index scores below the cutoff leaves. A few statements per album, whatever the number of
    photos.
    """
    if not len(assets):
        return 0
    albums = list(Album.objects.filter(space=space).select_related("user").prefetch_related("libraries"))
    if not albums:
        return 0
    e = np.asarray(vectors, dtype=np.float16)
    libraries = np.array([a.library_id for a in assets])
    asset_ids = np.array([a.pk for a in assets])
    added = 0
    for album in albums:
        in_scope = np.isin(libraries, album_library_ids(album))
        if in_scope.any():
            in_scope[in_scope] = kept_by_filters(album, asset_ids[in_scope])
        if not in_scope.any():
            continue
        scores = exact_parts(query_from_bytes(album.query_vector), e[in_scope], space.vlm_dim).score
        ids = asset_ids[in_scope].tolist()
        existing = {asset_id: (pk, state) for pk, asset_id, state in
                    AlbumPhoto.objects.filter(album=album, asset_id__in=ids).values_list("pk", "asset_id", "state")}
        above = scores >= as_score(album.cutoff)
        with transaction.atomic():
            new = [AlbumPhoto(album=album, asset_id=a, score=float(s))
                   for a, s, ok in zip(ids, scores, above) if ok and a not in existing]
            added += len(AlbumPhoto.objects.bulk_create(new, ignore_conflicts=True))
            leaving = [a for a, ok in zip(ids, above) if not ok and existing.get(a, (0, ""))[1] == AlbumPhoto.State.AUTO]
            AlbumPhoto.objects.filter(album=album, asset_id__in=leaving, state=AlbumPhoto.State.AUTO).delete()
            rescored = [AlbumPhoto(pk=existing[a][0], score=float(s)) for a, s in zip(ids, scores)
                        if a in existing and a not in leaving]
            AlbumPhoto.objects.bulk_update(rescored, ["score"])
    return added


def score_stored_photos(space: EmbeddingSpace, asset_ids: Sequence[int]) -> int:
    """`add_indexed_photos` for photos by id, with their vectors as the database holds them."""
    stored = dict(AssetEmbedding.objects.filter(space=space, asset_id__in=list(asset_ids))
                  .values_list("asset_id", "vector"))
    assets = list(Asset.objects.filter(pk__in=list(stored)).order_by("pk"))
    if not assets:
        return 0
    return add_indexed_photos(space, assets, np.stack([np.asarray(stored[a.pk], dtype=np.float32) for a in assets]))


def set_photo_state(album: Album, asset_id: int, state: str) -> AlbumPhoto | None:
    """Pin or remove a photo by hand (any photo of the album's libraries the owner may see:
    pinning one from just below the cutoff adds it), or hand it back to its score (`auto`:
    unpinned, or put back after a removal). Returns the photo's row, or None when its score
    leaves it out of the album."""
    if state not in AlbumPhoto.State.values:
        raise AlbumError("A photo can be pinned, removed, or given back to its score (auto).")
    if not Asset.objects.filter(pk=asset_id, library_id__in=album_library_ids(album)).exists():
        raise AlbumError("No such photo in this album's libraries.")
    if state == AlbumPhoto.State.AUTO:
        return _back_to_score(album, asset_id)
    photo, _ = AlbumPhoto.objects.update_or_create(album=album, asset_id=asset_id, defaults={"state": state})
    return photo


def _back_to_score(album: Album, asset_id: int) -> AlbumPhoto | None:
    """The photo is in the album when it passes the album's filters and scores at least the
    cutoff now, as if no hand had touched it; a photo not indexed in the album's space has no
    score yet and joins when it is (`add_indexed_photos`)."""
    vector = (AssetEmbedding.objects.filter(asset_id=asset_id, space_id=album.space_id)
              .values_list("vector", flat=True).first() if album.space_id else None)
    score = (exact_parts(query_from_bytes(album.query_vector), np.asarray(vector, dtype=np.float16)[None, :],
                         album.space.vlm_dim).score[0] if vector is not None else None)
    if score is None or not kept_by_filters(album, [asset_id])[0] or score < as_score(album.cutoff):
        AlbumPhoto.objects.filter(album=album, asset_id=asset_id).delete()
        return None
    photo, _ = AlbumPhoto.objects.update_or_create(album=album, asset_id=asset_id,
                                                   defaults={"state": AlbumPhoto.State.AUTO, "score": float(score)})
    return photo


def album_photos(album: Album, viewer, sort: str = "taken") -> QuerySet[AlbumPhoto]:
    """The album's photos `viewer` may see now (pinned and automatic; never removed ones)."""
    return (AlbumPhoto.objects.filter(album=album, asset__library_id__in=viewable_library_ids(album, viewer))
            .exclude(state=AlbumPhoto.State.REMOVED).exclude(asset__status=Asset.Status.FAILED)
            .select_related("asset").order_by(*SORTS.get(sort, SORTS["taken"])))


@dataclass(frozen=True)
class AuditRow:
    asset_id: int
    library_id: int
    score: np.float32  # exact (retrieval.search.scores): compares in float32 with the cutoff
    state: str  # auto / pinned / removed, or "" for a photo that has no row (yet)
    above_cutoff: bool

    @property
    def in_album(self) -> bool:
        """Shown in the album: a row pinned or added by its score, or no row yet but scoring at
        least the cutoff (indexing adds it)."""
        return self.state in (AlbumPhoto.State.AUTO, AlbumPhoto.State.PINNED) or (self.state == "" and self.above_cutoff)


@dataclass(frozen=True)
class Audit:
    cutoff: float
    above: list[AuditRow]  # the lowest-scoring photos at or above the cutoff, best first
    below: list[AuditRow]  # the best photos under the cutoff, best first
    proxies: list  # ProxyImage rows of the album's proxy set
    disabled_proxies: list[int]
    chart: ScoreChart | None = None  # the scope's scores and the cutoff, drawn


def score_chart(fast: ScopeScores, cutoff: float, query: np.ndarray, split: int) -> ScoreChart | None:
    """The album scope's scores with the album's cutoff line and, when the scores show a
    separate category, the components of the match estimate's fit (fitted afresh on this scope,
    without the search's proxy hint: the album keeps no proxy features)."""
    histogram = fast.histogram(HISTOGRAM_BINS)
    # At least the cutoff in float32 = more than the float32 just below it.
    at_least, _ = exact_count(fast, float(np.nextafter(as_score(cutoff), np.float32(-np.inf))), query, split)
    caption = f"{at_least} photo{'' if at_least == 1 else 's'} at or above it"
    return chart_of(histogram, fit_mixture(histogram), cutoff, caption)


def audit(album: Album, viewer, side: int = AUDIT_SIDE) -> Audit:
    """Why a photo is in or out: the photos just above and just below the cutoff, scored now."""
    proxies = list(album.proxy_set.images.all()) if album.proxy_set_id else []
    if album.space is None:
        return Audit(album.cutoff, [], [], proxies, list(album.disabled_proxies))
    u = query_from_bytes(album.query_vector)
    fast = scope_scores(album.space, u, album_scope(album, viewable_library_ids(album, viewer)))
    (above_ids, above), (below_ids, below) = exact_neighbours(fast, album.cutoff, side, u, album.space.vlm_dim)
    picked, scores = [int(pk) for pk in np.concatenate([above_ids, below_ids])], np.concatenate([above, below])
    states = dict(AlbumPhoto.objects.filter(album=album, asset_id__in=picked).values_list("asset_id", "state"))
    libraries = dict(Asset.objects.filter(pk__in=picked).values_list("pk", "library_id"))
    cut = len(above_ids)
    rows = [AuditRow(pk, libraries[pk], score, states.get(pk, ""), i < cut)
            for i, (pk, score) in enumerate(zip(picked, scores))]
    return Audit(album.cutoff, rows[:cut], rows[cut:], proxies, list(album.disabled_proxies),
                 score_chart(fast, album.cutoff, u, album.space.vlm_dim))


def albums_of(user) -> QuerySet[Album]:
    return Album.objects.filter(user=user)


NOT_OWNER = "Only the album's owner may change it; it is shared with you read-only."


def change_album(album: Album, name: str | None = None, shared: bool | None = None) -> Album:
    """Rename or share/unshare an album (its owner's call; the faces check that)."""
    fields = {}
    if name is not None:
        name = name.strip()
        if not name:
            raise AlbumError("An album needs a name.")
        fields["name"] = name[:200]
    if shared is not None:
        fields["shared"] = shared
    for field, value in fields.items():
        setattr(album, field, value)
    if fields:
        album.save(update_fields=list(fields))
    return album


def can_view(album: Album, user) -> bool:
    """The owner, or, for a shared album, a member of one of its libraries now (read-only)."""
    return album.user_id == user.pk or (album.shared and bool(viewable_library_ids(album, user)))


def albums_visible_to(user) -> list[Album]:
    """The user's own albums, then those shared with them (by name), read when asked: unsharing
    or leaving the libraries hides an album at once. A user sees a handful of albums, so each
    shared one is checked by the album page's own rule (`can_view`)."""
    own = list(albums_of(user).select_related("user", "source_search").order_by("name", "pk"))
    visible = visible_library_ids(user)
    shared = (Album.objects.filter(shared=True).exclude(user=user)
              .filter(Q(libraries__in=visible) | Q(libraries=None)).distinct()
              .select_related("user", "source_search").order_by("name", "pk"))
    return own + [album for album in shared if can_view(album, user)]


def library_names(ids: list[int]) -> list[str]:
    return list(Library.objects.filter(pk__in=ids).order_by("name").values_list("name", flat=True))
