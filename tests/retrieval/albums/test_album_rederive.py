"""Albums across a model change: re-derived in the newly serving space from their recipe.

Two real spaces of tiny random-weight models (the `tiny` profile and a second profile built
with the same recipe under other model ids, so other weights and another fingerprint). Photos
get planted vectors in each space (`test_albums.vectors_scoring`), so a text-only category of
60 photos among 400 is found in both.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db.models import ProtectedError
from django.utils import timezone
from PIL import Image

from assets.models import Asset
from retrieval.albums import derive, tasks as album_tasks
from retrieval.albums.albums import album_photos, create_album_from_search, delete_album, set_photo_state
from retrieval.albums.derive import _BackgroundSteps, album_recipe
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import serving_space, space_for_profile
from retrieval.indexing.tasks import index_space
from retrieval.models import Album, AlbumExample, AlbumPhoto, AssetEmbedding, EmbeddingSpace, Search, SearchExample
from retrieval.search.matches import query_from_bytes
from retrieval.search.recipe import gather_inputs, plan_in_space
from retrieval.search.tasks import run_search
from retrieval.sweeper import SweepReport, sweep_stale_work
from tests.retrieval.albums.test_albums import (  # noqa: F401 (fixtures)
    TEXT,
    PlantedEncoders,
    category,
    index,
    new_photo_file,
    vectors_scoring,
)
from tests.retrieval.search.test_cutoff import planted_scores
from tests.retrieval.search.test_search_core import new_search, planted_proxy_set, text_vector, tiny  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_b(tiny_model_dir, monkeypatch):
    """A second space: the tiny recipe under other model ids (other weights, other fingerprint)."""
    from retrieval.engine import profiles
    from retrieval.engine.build_models import build_profile

    profile = dataclasses.replace(profiles.PROFILES["tiny"], name="tiny-b", vlm="cletir-tiny-b/open-clip",
                                  vision="cletir-tiny-b/dinov2", generator="cletir-tiny-b/sd-turbo",
                                  decoder="cletir-tiny-b/taesd")
    monkeypatch.setitem(profiles.PROFILES, "tiny-b", profile)
    build_profile(profile, tiny_model_dir)
    return space_for_profile("tiny-b")


def plant_in(space, assets, seed: int) -> None:
    """Vectors for `assets` in `space`: the first 60 are the category again."""
    rng = np.random.default_rng(seed)
    scores, _ = planted_scores(rng, len(assets), 60, separation=4.0)
    vectors = vectors_scoring(space, text_vector(space, TEXT), scores, rng)
    AssetEmbedding.objects.bulk_create([AssetEmbedding(asset=a, space=space, vector=v) for a, v in zip(assets, vectors)])


@pytest.fixture
def switch(eager_tasks, django_capture_on_commit_callbacks):
    """`activate_profile`'s work for a space whose photos have vectors already: activate it, run
    its indexing task (nothing left to embed: it builds the index and switches search over), and
    what that announces runs (eager tasks)."""

    def run(space):
        with django_capture_on_commit_callbacks(execute=True):
            activate_space(space)
        with django_capture_on_commit_callbacks(execute=True):
            index_space(space.pk)
        assert serving_space() == space

    return run


def test_an_album_saved_before_the_switch_keeps_its_hand_choices_and_takes_new_photos_after(
        tiny, tiny_b, ann, library, category, media_root, index, switch, client):
    album = create_album_from_search(ann, category["search"], "Boats")
    members = list(AlbumPhoto.objects.filter(album=album).order_by("-score").values_list("asset_id", flat=True))
    removed = members[0]
    pinned = next(a.pk for a in category["assets"][300:] if a.pk not in members)
    set_photo_state(album, removed, AlbumPhoto.State.REMOVED)
    set_photo_state(album, pinned, AlbumPhoto.State.PINNED)
    plant_in(tiny_b, category["assets"], seed=77)

    # The new space is being filled; a photo uploaded now is indexed into it (only), scoring
    # well above anything: the album, still in the old space, cannot take it yet.
    activate_space(tiny_b)  # its indexing task is not run yet (on commit, which a test never reaches)
    boat = new_photo_file(media_root, library, "boat")
    encoders = PlantedEncoders(tiny_b)
    encoders.queue = list(vectors_scoring(tiny_b, text_vector(tiny_b, TEXT), np.array([0.9]), np.random.default_rng(3)))
    assert index(tiny_b, encoders) == (1, 0)
    assert not AlbumPhoto.objects.filter(album=album, asset=boat).exists()

    switch(tiny_b)
    album.refresh_from_db()
    assert (album.space_id, album.derivation, album.derivation_error) == (tiny_b.pk, "current", "")
    assert album.derived_at is not None

    # The very vector and cutoff a search of the same recipe makes in the new space.
    fresh = new_search(ann, TEXT, text_only=True, top_n=401)
    assert run_search(fresh.pk) == {"search": fresh.pk, "status": "done"}
    fresh.refresh_from_db()
    assert np.array_equal(query_from_bytes(album.query_vector), query_from_bytes(fresh.query_vector))
    assert album.cutoff == fresh.match_cutoff and fresh.match_count > 0

    matches = set(fresh.results.filter(rank__lte=fresh.match_count).values_list("asset_id", flat=True))
    assert boat.pk in matches
    shown = {p.asset_id: p.state for p in album_photos(album, ann)}
    assert set(shown) == (matches - {removed}) | {pinned}
    assert shown[pinned] == "pinned" and shown[boat.pk] == "auto"
    assert AlbumPhoto.objects.get(album=album, asset_id=removed).state == "removed"
    assert all(p.score is not None and p.score >= album.cutoff
               for p in AlbumPhoto.objects.filter(album=album, state="auto"))

    # Idempotent: a second delivery (or a re-queue) changes nothing.
    rows = sorted(AlbumPhoto.objects.filter(album=album).values_list("asset_id", "state", "score"))
    assert album_tasks.rederive_album(album.pk) == {"album": album.pk, "outcome": "current"}
    assert sorted(AlbumPhoto.objects.filter(album=album).values_list("asset_id", "state", "score")) == rows

    # And it keeps taking photos in its new space.
    later = new_photo_file(media_root, library, "later")
    encoders.queue = list(vectors_scoring(tiny_b, text_vector(tiny_b, TEXT), np.array([0.9]), np.random.default_rng(4)))
    index(tiny_b, encoders)
    assert AlbumPhoto.objects.filter(album=album, asset=later, state="auto").exists()


def test_the_old_space_cannot_be_deleted_while_an_album_depends_on_it(
        tiny, tiny_b, ann, category, switch, monkeypatch, client, admin_user):
    album = create_album_from_search(ann, category["search"], "Boats")
    plant_in(tiny_b, category["assets"], seed=78)
    with pytest.raises(ProtectedError):
        EmbeddingSpace.objects.get(pk=tiny.pk).delete()
    client.force_login(admin_user)
    page = client.post(f"/admin/retrieval/embeddingspace/{tiny.pk}/delete/", {"post": "yes"})
    assert page.status_code == 200 and "Cannot delete" in page.content.decode()
    assert EmbeddingSpace.objects.filter(pk=tiny.pk).exists()

    switch(tiny_b)
    EmbeddingSpace.objects.get(pk=tiny.pk).delete()  # nothing depends on it any more
    album.refresh_from_db()
    assert album.space_id == tiny_b.pk and album_photos(album, ann).count() > 0


def test_a_failed_re_derivation_is_shown_with_its_reason_keeps_the_photos_and_is_retried(
        tiny, tiny_b, ann, category, switch, monkeypatch, client, admin_user):
    album = create_album_from_search(ann, category["search"], "Boats")
    before = sorted(p.asset_id for p in album_photos(album, ann))
    plant_in(tiny_b, category["assets"], seed=79)
    real_gather = derive.gather_inputs

    def broken(*args, **kwargs):
        raise RuntimeError("the text encoder ran out of memory")

    monkeypatch.setattr(derive, "gather_inputs", broken)
    switch(tiny_b)
    album.refresh_from_db()
    reason = "RuntimeError: the text encoder ran out of memory"
    assert (album.space_id, album.derivation, album.derivation_error) == (tiny.pk, "failed", reason)
    assert sorted(p.asset_id for p in album_photos(album, ann)) == before  # still shown

    client.force_login(ann)
    page = client.get(f"/albums/{album.pk}/").content.decode()
    assert 'id="album-derivation" data-state="failed"' in page and reason in page
    body = client.get(f"/api/albums/{album.pk}/").json()
    assert (body["derivation"], body["derivation_error"], body["space"]) == ("failed", reason, tiny.name)
    assert "update for the new model failed" in client.get("/albums/").content.decode()
    client.force_login(admin_user)
    assert reason in client.get(f"/admin/retrieval/album/{album.pk}/change/").content.decode()

    # The sweeper tries again once the last attempt is stale; then it works.
    monkeypatch.setattr(derive, "gather_inputs", real_gather)
    assert sweep_stale_work() == SweepReport()  # too soon
    later = timezone.now() + timedelta(seconds=3600)
    assert sweep_stale_work(now=later).albums_requeued == 1
    album.refresh_from_db()
    assert (album.space_id, album.derivation, album.derivation_error) == (tiny_b.pk, "current", "")


def test_a_re_derivation_whose_worker_died_is_queued_again_by_the_sweeper(
        tiny, tiny_b, ann, category, switch, monkeypatch, client):
    album = create_album_from_search(ann, category["search"], "Boats")
    plant_in(tiny_b, category["assets"], seed=80)
    lost, real_delay = [], album_tasks.rederive_album.delay
    monkeypatch.setattr(album_tasks.rederive_album, "delay", lambda pk: lost.append(pk))  # the message is lost
    switch(tiny_b)
    assert lost == [album.pk]
    album.refresh_from_db()
    assert (album.space_id, album.derivation) == (tiny.pk, "updating")
    client.force_login(ann)
    page = client.get(f"/albums/{album.pk}/").content.decode()
    assert 'data-state="updating"' in page and "Updating for the new model" in page
    assert client.get(f"/albums/{album.pk}/").context["total"] == album_photos(album, ann).count() > 0

    monkeypatch.setattr(album_tasks.rederive_album, "delay", real_delay)
    assert sweep_stale_work().albums_requeued == 0  # queued a moment ago: a worker may be at it
    assert sweep_stale_work(now=timezone.now() + timedelta(seconds=3600)).albums_requeued == 1
    album.refresh_from_db()
    assert (album.space_id, album.derivation) == (tiny_b.pk, "current")


def test_the_recipe_makes_the_search_s_query_again_with_proxies_examples_and_negatives(
        tiny, ann, library, media_root, tmp_path, django_capture_on_commit_callbacks):
    """Everything a search's vector is made from is kept by the album and gathered again by the
    search's own code: the same space gives the same vector, to the last bit."""
    rng = np.random.default_rng(12)
    proxies = rng.standard_normal((4, tiny.vision_dim)).astype(np.float32)
    planted_proxy_set(tiny, TEXT, proxies / np.linalg.norm(proxies, axis=1, keepdims=True))
    negatives = rng.standard_normal((4, tiny.vision_dim)).astype(np.float32)
    planted_proxy_set(tiny, "harbour", negatives / np.linalg.norm(negatives, axis=1, keepdims=True))
    photo, other = new_photo_file(media_root, library, "example"), new_photo_file(media_root, library, "not-this")
    search = new_search(ann, TEXT, lambda_override=0.4, disabled_proxies=[1], negative_text="harbour")
    search.positive_assets.set([photo])
    search.negative_assets.set([other])
    upload = tmp_path / "upload.jpg"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(upload)
    SearchExample.objects.create(search=search, kind="positive", file=ContentFile(upload.read_bytes(), "example"))
    assert run_search(search.pk) == {"search": search.pk, "status": "done"}
    Search.objects.filter(pk=search.pk).update(match_count=1)  # saving needs a match; the vector is what counts here
    search.refresh_from_db()

    album = create_album_from_search(ann, search, "Boats")
    copy = AlbumExample.objects.get(album=album)
    assert copy.file.name != search.examples.get().file.name and copy.file.read() == upload.read_bytes()
    recipe = album_recipe(album)
    assert (recipe.text, recipe.k, recipe.seed, recipe.lambda_override, list(recipe.disabled_proxies),
            recipe.negative_text) == (TEXT, 4, 0, 0.4, [1], "harbour")
    assert ([a.pk for a in recipe.positive_assets], [a.pk for a in recipe.negative_assets]) == ([photo.pk], [other.pk])
    u = plan_in_space(tiny, gather_inputs(tiny, recipe, _BackgroundSteps(ann.pk))).u
    assert np.array_equal(u, query_from_bytes(search.query_vector))

    # Each owner deletes its own files: the search's go with it (not here), the album's with it.
    path = copy.file.path
    search.delete()
    assert AlbumExample.objects.filter(album=album).exists()
    assert os.path.exists(path)
    with django_capture_on_commit_callbacks(execute=True):
        delete_album(album)
    assert not Album.objects.filter(pk=album.pk).exists() and not os.path.exists(path)


def test_an_example_photo_the_owner_can_no_longer_see_is_left_out_of_the_recipe(tiny, ann, library, make_user,
                                                                                 media_root):
    from assets.models import Library, LibraryMembership

    bob = make_user("bob")
    bobs = Library.objects.create(name="Bob's", owner=bob)
    membership = LibraryMembership.objects.create(library=bobs, user=ann, role=LibraryMembership.Role.VIEWER)
    theirs, mine = new_photo_file(media_root, bobs, "theirs"), new_photo_file(media_root, library, "mine")
    album = Album.objects.create(user=ann, name="x", space=tiny, query_vector=b"", cutoff=0.5, text=TEXT, k=4)
    album.positive_assets.set([theirs, mine])
    assert [a.pk for a in album_recipe(album).positive_assets] == sorted([theirs.pk, mine.pk])
    membership.delete()
    assert [a.pk for a in album_recipe(album).positive_assets] == [mine.pk]
    assert Asset.objects.filter(pk=theirs.pk).exists()
