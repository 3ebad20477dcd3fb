"""Albums that outlive a model change: re-derived in each newly serving space from their recipe.

An album's vector u and cutoff belong to one space. When another space starts serving (its
re-index complete, `retrieval.indexing.signals.space_serving`), every album of another space is
marked "updating" and queued (`tasks.rederive_album`); until it is re-derived it keeps showing
its photos from its old space, which cannot be deleted meanwhile (`Album.space` is PROTECT).

Re-deriving is a search made again, with the search's own code: the recipe (text, seed and K,
kept proxies, λ, negative text, example and negative photos the owner may see now, the album's
uploaded examples) is gathered in the new space by `retrieval.search.recipe` (text vector,
the proxy cache, generated when missing, encoded examples), planned by the same plan, and the
cutoff is the match estimate a search makes over the album's scope (`estimate_scope_matches`).
Then, in one transaction with the album's row locked: photos of the scope at or above the new
cutoff join (state auto), automatic photos below it leave, pinned and removed photos stay as
they are (rescored in the new space), and the album moves to the new space. Photos indexed into
the new space while this ran are scored after the commit like any newly indexed photo.

Idempotent: an album already in the serving space is left as it is (a twin delivery, a
re-queue by the sweeper). A failure is stored with its reason (the album page, the API and the
admin show it) and retried by the sweeper; the album keeps its photos meanwhile.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..indexing.spaces import serving_space
from ..models import Album, AlbumPhoto, AssetEmbedding, EmbeddingSpace, ProxySet, SearchExample
from ..search.inputs import text_vectors
from ..search.matches import HINT_TOP_ROWS, estimate_scope_matches, query_bytes
from ..search.proxies import get_or_generate_proxy_set
from ..search.ranking import rank
from ..search.recipe import QueryRecipe, gather_inputs, plan_in_space
from ..search.scores import exact_parts
from ..search.scope import visible_library_ids
from .albums import add_scope_members, album_scope, score_stored_photos

logger = logging.getLogger(__name__)

NO_MATCHES = ("In the new model this album's query finds no clear matches, so its photos stay as the previous "
              "model chose them (it is tried again later).")
# Photos whose vectors were written this long before the re-derivation's scan are scored again
# after it: a batch that committed during the scan is not missed (scoring twice changes nothing).
LATE_PHOTOS_MARGIN = timedelta(minutes=10)


class DerivationFailed(Exception):
    """An album that cannot be re-derived now; the message is shown as it is."""


class _BackgroundSteps:
    """`recipe.InputSteps` of a re-derivation: nobody waits for it, nothing to time or show;
    the proxies come from the shared cache (generated when missing)."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.proxy_set_used: ProxySet | None = None

    def stage(self, name: str):
        return nullcontext()

    def progress(self, value: int, **fields) -> None:
        pass

    def text_vector(self, space: EmbeddingSpace, text: str) -> np.ndarray:
        return text_vectors.get(space, text, self.user_id)[0]

    def proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet:
        self.proxy_set_used = get_or_generate_proxy_set(space, text, seeds)[0]
        return self.proxy_set_used

    def negative_proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet:
        return get_or_generate_proxy_set(space, text, seeds)[0]


def album_recipe(album: Album) -> QueryRecipe:
    """What the album's query is made from, with the example and negative photos its owner may
    see now."""
    visible = visible_library_ids(album.user)
    uploads = list(album.examples.order_by("pk"))
    return QueryRecipe(
        text=album.text, seed=album.seed, k=album.k, text_only=album.text_only,
        disabled_proxies=album.disabled_proxies, lambda_override=album.lambda_override,
        negative_text=album.negative_text,
        positive_assets=list(album.positive_assets.filter(library_id__in=visible).order_by("pk")),
        negative_assets=list(album.negative_assets.filter(library_id__in=visible).order_by("pk")),
        positive_files=[e.file.path for e in uploads if e.kind == SearchExample.Kind.POSITIVE],
        negative_files=[e.file.path for e in uploads if e.kind == SearchExample.Kind.NEGATIVE],
    )


def derive_query(album: Album, space: EmbeddingSpace) -> tuple[np.ndarray, float, ProxySet | None]:
    """(u, cutoff, proxy set) of the album's recipe in `space`, as a search of it would make
    them there; DerivationFailed when its query finds no clear matches."""
    if not album.text and not (album.positive_assets.exists() or album.examples.exists()):
        raise DerivationFailed("The album keeps no recipe (it was saved before albums kept one and its search "
                               "is deleted), so it cannot be made again in the new model.")
    steps = _BackgroundSteps(album.user_id)
    plan = plan_in_space(space, gather_inputs(space, album_recipe(album), steps))
    ranking = rank(space, plan.u, album_scope(album), HINT_TOP_ROWS, backend="pgvector")
    estimate, _ = estimate_scope_matches(space, plan.u, ranking, list(plan.references),
                                         settings.CLETIR_MATCH_POSTERIOR)
    if not estimate.count:
        raise DerivationFailed(NO_MATCHES)
    return plan.u, estimate.cutoff, steps.proxy_set_used


def rederive(album_id: int) -> str:
    """Re-derive the album in the serving space; returns what happened ("derived", "current",
    "gone"). Raises on failure (the task records it on the album)."""
    space = serving_space()
    album = Album.objects.select_related("user").filter(pk=album_id).first()
    if album is None or space is None:
        return "gone"
    if album.space_id == space.pk:
        Album.objects.filter(pk=album.pk, space=space).exclude(derivation=Album.Derivation.CURRENT).update(
            derivation=Album.Derivation.CURRENT, derivation_error="")
        return "current"
    started = timezone.now()
    u, cutoff, proxy_set = derive_query(album, space)
    with transaction.atomic():
        album = Album.objects.select_for_update().select_related("user").get(pk=album.pk)
        if album.space_id == space.pk:
            return "current"  # a twin delivery finished first
        members = add_scope_members(album, space, u, cutoff)
        rows = dict(AlbumPhoto.objects.filter(album=album).values_list("asset_id", "state"))
        leaving = [a for a, state in rows.items() if state == AlbumPhoto.State.AUTO and a not in members]
        AlbumPhoto.objects.filter(album=album, asset_id__in=leaving, state=AlbumPhoto.State.AUTO).delete()
        scores = {**_scores(space, u, [a for a in rows if a not in members and a not in leaving]), **members}
        AlbumPhoto.objects.bulk_update(
            [AlbumPhoto(pk=pk, score=scores.get(asset_id)) for pk, asset_id in
             AlbumPhoto.objects.filter(album=album).values_list("pk", "asset_id")], ["score"], batch_size=2000)
        Album.objects.filter(pk=album.pk).update(
            space=space, query_vector=query_bytes(u), cutoff=cutoff, proxy_set=proxy_set,
            derivation=Album.Derivation.CURRENT, derivation_error="", derived_at=timezone.now())
    late = AssetEmbedding.objects.filter(space=space, created_at__gte=started - LATE_PHOTOS_MARGIN)
    score_stored_photos(space, list(late.values_list("asset_id", flat=True)))
    logger.info("album %s re-derived in %s: %d photos above the cutoff", album.pk, space, len(members))
    return "derived"


def _scores(space: EmbeddingSpace, u: np.ndarray, asset_ids: list[int]) -> dict[int, float]:
    """Exact scores in `space` of photos kept by hand (None for one not indexed there)."""
    stored = dict(AssetEmbedding.objects.filter(space=space, asset_id__in=asset_ids).values_list("asset_id", "vector"))
    if not stored:
        return {}
    ids = list(stored)
    e = np.stack([np.asarray(stored[a], dtype=np.float16) for a in ids])
    return {a: float(s) for a, s in zip(ids, exact_parts(u, e, space.vlm_dim).score)}
