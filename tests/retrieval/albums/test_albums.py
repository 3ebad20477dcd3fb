"""Match counts and smart albums on real Postgres with planted embeddings.

Photos get vectors whose text half scores a chosen value against the query's text vector t
(I = s t + sqrt(1 - s²) r, r ⟂ t), so a text-only search (u = [t; 0]) sees planted scores
from `test_cutoff.planted_scores`: a category of known size over an overlapping background.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

import numpy as np
import pytest
import torch
from PIL import Image

from assets.models import Asset, Library, LibraryMembership
from retrieval.albums.albums import add_indexed_photos, album_photos, audit, create_album_from_search, set_photo_state
from retrieval.engine.photo_batches import PhotoBatchPreparer
from retrieval.indexing.photos import embed_batch
from retrieval.indexing.services import reindex
from retrieval.search.matches import query_from_bytes
from retrieval.models import Album, AlbumPhoto, AssetEmbedding, SearchResult
from retrieval.search.tasks import run_search
from tests.retrieval.search.test_cutoff import planted_scores
from tests.retrieval.search.test_search_core import new_search, text_vector, tiny  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
TEXT = "sailboat"
START = datetime(2020, 1, 1, tzinfo=dt_timezone.utc)


def vectors_scoring(space, t: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fused vectors e = [I; V] with <t, I> = score (before half-precision storage)."""
    r = rng.standard_normal((len(scores), space.vlm_dim))
    r -= np.outer(r @ t, t)  # orthogonal to t (t is a unit vector)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    i_part = scores[:, None] * t[None, :] + np.sqrt(1 - scores[:, None] ** 2) * r
    v_part = rng.standard_normal((len(scores), space.vision_dim))
    v_part /= np.linalg.norm(v_part, axis=1, keepdims=True)
    return np.concatenate([i_part, v_part], axis=1).astype(np.float32)


def plant_photos(space, library: Library, vectors: np.ndarray, start: int) -> list[Asset]:
    """Ready photos with the given vectors, captured one day apart in reverse id order (so the
    capture-time and upload-time orders differ)."""
    assets = Asset.objects.bulk_create([
        Asset(library=library, file=f"planted/{library.pk}/{start + i}.jpg", sha256=f"{start + i:064x}",
              status=Asset.Status.READY, taken_at=START - timedelta(days=start + i))
        for i in range(len(vectors))
    ])
    AssetEmbedding.objects.bulk_create([AssetEmbedding(asset=a, space=space, vector=v) for a, v in zip(assets, vectors)],
                                       batch_size=2000)
    return assets


def new_photo_file(media_root, library: Library, name: str) -> Asset:
    """A photo with a real file and no vector yet (what an upload leaves for indexing)."""
    path = media_root / "uploads" / f"{name}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 120, 200)).save(path)
    return Asset.objects.create(library=library, file=f"uploads/{name}.jpg", sha256=name.encode().hex().ljust(64, "0"),
                                status=Asset.Status.READY)


@pytest.fixture
def index(eager_tasks, django_capture_on_commit_callbacks):
    """`embed_batch` as a worker runs it: its batch commits, then what listens to new photos
    (the albums' scoring task, eager here) runs."""

    def run(space, encoders, batch_size: int = 10) -> tuple[int, int]:
        with django_capture_on_commit_callbacks(execute=True):
            return embed_batch(space, encoders, batch_size=batch_size)

    return run


class PlantedEncoders:
    """Stands in for the encoders in `embed_batch`: decodes the photos (a real preparer, without
    crop specs) and returns the next planted vectors as their features."""

    device = torch.device("cpu")

    def __init__(self, space):
        self.space = space
        self.queue: list[np.ndarray] = []

    def photo_preparer(self, threads: int, **options):
        return PhotoBatchPreparer(None, "cpu", torch.float32, threads)

    def encode_prepared(self, prepared):
        count = len(prepared.decoded)
        batch, self.queue = np.stack(self.queue[:count]), self.queue[count:]
        return torch.from_numpy(batch[:, :self.space.vlm_dim]), torch.from_numpy(batch[:, self.space.vlm_dim:])


@pytest.fixture
def category(tiny, ann, library):
    """400 planted photos, 60 of the category, and a finished text-only search for it."""
    rng = np.random.default_rng(21)
    t = text_vector(tiny, TEXT)
    scores, _ = planted_scores(rng, 400, 60, separation=4.0)
    assets = plant_photos(tiny, library, vectors_scoring(tiny, t, scores, rng), start=0)
    search = new_search(ann, TEXT, text_only=True, top_n=400)
    assert run_search(search.pk) == {"search": search.pk, "status": "done"}
    search.refresh_from_db()
    return {"search": search, "t": t, "rng": rng, "assets": assets, "truth": {a.pk for a in assets[:60]}}


def test_a_search_estimates_its_matches_over_the_whole_scope_and_keeps_its_query_vector(tiny, category):
    search = category["search"]
    assert abs(search.match_count - 60) / 60 <= 0.2
    assert np.array_equal(query_from_bytes(search.query_vector),
                          np.concatenate([category["t"], np.zeros(tiny.vision_dim, dtype=np.float32)]))
    results = list(SearchResult.objects.filter(search=search).order_by("rank"))
    # The cutoff is the score of the last match, as the ranking scored it.
    assert search.match_cutoff == pytest.approx(results[search.match_count - 1].score, abs=1e-6)
    assert results[search.match_count].score < search.match_cutoff
    assert search.match_estimate["photos"] == 400 and "matches" in search.timings


def test_the_estimate_holds_end_to_end_for_categories_of_several_sizes(tiny, ann, library):
    """Several planted categories through the search task (each in its own library)."""
    rng = np.random.default_rng(5)
    t = text_vector(tiny, TEXT)
    errors = []
    for n, (photos, size) in enumerate([(600, 30), (600, 60), (800, 120), (500, 75), (700, 40)]):
        lib = Library.objects.create(name=f"L{n}", owner=ann)
        scores, _ = planted_scores(rng, photos, size, separation=4.0)
        plant_photos(tiny, lib, vectors_scoring(tiny, t, scores, rng), start=10_000 * (n + 1))
        search = new_search(ann, TEXT, libraries=[lib], text_only=True, top_n=100)
        run_search(search.pk)
        search.refresh_from_db()
        errors.append(abs(search.match_count - size) / size)
    assert np.mean(np.array(errors) <= 0.2) >= 0.8, errors


def test_saving_a_search_makes_an_album_of_every_photo_above_the_cutoff(tiny, ann, category):
    search = category["search"]
    album = create_album_from_search(ann, search, "  ")
    assert (album.name, album.cutoff, album.space_id, album.source_search_id) == (TEXT, search.match_cutoff, tiny.pk, search.pk)
    top = list(SearchResult.objects.filter(search=search, rank__lte=search.match_count).values_list("asset_id", flat=True))
    assert set(AlbumPhoto.objects.filter(album=album).values_list("asset_id", flat=True)) == set(top)
    assert all(p.state == AlbumPhoto.State.AUTO and p.score >= album.cutoff for p in AlbumPhoto.objects.filter(album=album))
    # By capture time (planted: the higher the id, the earlier), or by upload time (id order).
    by_taken = [p.asset_id for p in album_photos(album, ann, "taken")]
    assert by_taken == sorted(top, reverse=True)
    assert [p.asset_id for p in album_photos(album, ann, "uploaded")] == sorted(top)


def test_a_photo_indexed_later_joins_the_album_and_hand_choices_survive_reindexing(tiny, ann, library, category, media_root,
                                                                                   index):
    album = create_album_from_search(ann, category["search"], "Boats")
    t, rng = category["t"], category["rng"]
    boat, other = new_photo_file(media_root, library, "boat"), new_photo_file(media_root, library, "other")
    encoders = PlantedEncoders(tiny)
    encoders.queue = list(vectors_scoring(tiny, t, np.array([album.cutoff + 0.03, 0.2]), rng))
    assert index(tiny, encoders) == (2, 0)
    state = dict(AlbumPhoto.objects.filter(album=album, asset__in=[boat, other]).values_list("asset_id", "state"))
    assert state == {boat.pk: AlbumPhoto.State.AUTO}

    # Pin a photo below the cutoff, remove one above it; re-index both with the same scores,
    # and the removed one with an even higher score: the choices stay.
    below = other
    member = AlbumPhoto.objects.filter(album=album, state=AlbumPhoto.State.AUTO).exclude(asset=boat).order_by("-score").first()
    set_photo_state(album, below.pk, AlbumPhoto.State.PINNED)
    set_photo_state(album, member.asset_id, AlbumPhoto.State.REMOVED)
    reindex(tiny, Asset.objects.filter(pk__in=[boat.pk, below.pk]))
    encoders.queue = list(vectors_scoring(tiny, t, np.array([album.cutoff + 0.03, 0.2]), rng))
    assert index(tiny, encoders) == (2, 0)
    member_asset = Asset.objects.get(pk=member.asset_id)
    add_indexed_photos(tiny, [member_asset], vectors_scoring(tiny, t, np.array([album.cutoff + 0.1]), rng))
    shown = {p.asset_id: p.state for p in album_photos(album, ann)}
    assert shown[boat.pk] == AlbumPhoto.State.AUTO and shown[below.pk] == AlbumPhoto.State.PINNED
    assert member.asset_id not in shown
    assert AlbumPhoto.objects.get(album=album, asset_id=member.asset_id).state == AlbumPhoto.State.REMOVED

    # An automatic member that a re-index scores below the cutoff leaves; a pinned one stays.
    reindex(tiny, Asset.objects.filter(pk__in=[boat.pk, below.pk]))
    encoders.queue = list(vectors_scoring(tiny, t, np.array([0.2, 0.2]), rng))
    index(tiny, encoders)
    shown = {p.asset_id: p.state for p in album_photos(album, ann)}
    assert boat.pk not in shown and shown[below.pk] == AlbumPhoto.State.PINNED


def test_an_album_never_shows_a_library_its_viewer_lost_and_other_users_get_404(tiny, ann, library, category, make_user,
                                                                               client, media_root, index):
    bob = make_user("bob")
    shared = Library.objects.create(name="Bob's boats", owner=bob)
    membership = LibraryMembership.objects.create(library=shared, user=ann, role=LibraryMembership.Role.VIEWER)
    hidden = Library.objects.create(name="Bob's private", owner=bob)
    album = create_album_from_search(ann, category["search"], "Boats")  # scope: every library ann sees
    t, rng = category["t"], category["rng"]
    photos = {lib.pk: new_photo_file(media_root, lib, f"in-{lib.pk}") for lib in (shared, hidden)}
    encoders = PlantedEncoders(tiny)
    encoders.queue = list(vectors_scoring(tiny, t, np.array([album.cutoff + 0.05] * 2), rng))
    index(tiny, encoders)
    in_album = {p.asset_id for p in album_photos(album, ann)}
    assert photos[shared.pk].pk in in_album and photos[hidden.pk].pk not in in_album

    membership.delete()
    assert photos[shared.pk].pk not in {p.asset_id for p in album_photos(album, ann)}
    client.force_login(ann)
    body = client.get(f"/api/albums/{album.pk}/photos/?size=200").json()
    assert photos[shared.pk].pk not in {p["asset_id"] for p in body["results"]}
    assert body["count"] == len(album_photos(album, ann))

    client.force_login(bob)
    for url in (f"/albums/{album.pk}/", f"/albums/{album.pk}/audit", f"/api/albums/{album.pk}/",
                f"/api/albums/{album.pk}/photos/"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/albums/{album.pk}/pin/", {"asset": photos[hidden.pk].pk}).status_code == 404
    assert client.post(f"/search/{category['search'].pk}/save-album", {"name": "mine"}).status_code == 404
    assert client.post("/api/albums/", {"search": category["search"].pk}).status_code == 404
    assert Album.objects.count() == 1


def test_album_and_match_api_payloads(tiny, ann, library, category, client):
    search = category["search"]
    client.force_login(ann)
    body = client.get(f"/api/searches/{search.pk}/").json()
    assert (body["match_count"], body["match_cutoff"]) == (search.match_count, search.match_cutoff)
    matches = client.get(f"/api/searches/{search.pk}/results/?matches_only=1&sort=uploaded&size=200").json()
    top = sorted(SearchResult.objects.filter(search=search, rank__lte=search.match_count).values_list("asset_id", flat=True))
    assert matches["count"] == search.match_count and [r["asset_id"] for r in matches["results"]] == top

    created = client.post("/api/albums/", {"search": search.pk, "name": "Boats"}, content_type="application/json")
    assert created.status_code == 201
    album = Album.objects.get()
    assert created.json() == {
        "id": album.pk, "url": f"http://testserver/api/albums/{album.pk}/",
        "photos_url": f"http://testserver/api/albums/{album.pk}/photos/", "name": "Boats", "owner": "ann",
        "shared": False, "libraries": [], "space": tiny.name, "cutoff": search.match_cutoff, "source_search": search.pk,
        "disabled_proxies": [], "filters": {"taken_from": None, "taken_to": None, "camera_make": "", "camera_model": "",
                                            "keywords": [], "formats": []},
        "derivation": "current", "derivation_error": "",
        "created_at": album.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert [a["id"] for a in client.get("/api/albums/").json()] == [album.pk]  # no pagination on lists
    first = client.get(f"/api/albums/{album.pk}/photos/?sort=taken&size=200").json()["results"]
    assert [p["asset_id"] for p in first] == sorted(top, reverse=True)
    below = SearchResult.objects.get(search=search, rank=search.match_count + 1).asset_id
    pinned = client.post(f"/api/albums/{album.pk}/pin/", {"asset": below}, content_type="application/json").json()
    assert (pinned["asset_id"], pinned["state"]) == (below, "pinned")
    removed = client.post(f"/api/albums/{album.pk}/remove/", {"asset": top[0]}, content_type="application/json").json()
    assert (removed["asset_id"], removed["state"]) == (top[0], "removed")
    ids = [p["asset_id"] for p in client.get(f"/api/albums/{album.pk}/photos/?sort=uploaded&size=200").json()["results"]]
    assert ids == sorted(set(top) - {top[0]} | {below})
    assert client.get(f"/api/albums/{album.pk}/photos/?sort=random").status_code == 400
    assert client.post(f"/api/albums/{album.pk}/pin/", {"asset": 10**9}, content_type="application/json").status_code == 400


def test_pages_show_the_count_the_matches_and_the_audit(tiny, ann, category, client):
    search = category["search"]
    client.force_login(ann)
    page = client.get(f"/search/{search.pk}/").content.decode()
    assert f"about {search.match_count} matching photos" in page and "Save as album" in page
    only = client.get(f"/search/{search.pk}/?matches_only=1&sort=taken&size=200")
    assert len(only.context["page"].object_list) == search.match_count
    saved = client.post(f"/search/{search.pk}/save-album", {"name": "Boats"})
    album = Album.objects.get()
    assert saved.status_code == 302 and saved["Location"] == f"/albums/{album.pk}/"
    detail = client.get(f"/albums/{album.pk}/?sort=uploaded")
    assert detail.context["total"] == search.match_count
    report = audit(album, ann)
    assert len(report.above) == 12 and len(report.below) == 12
    assert all(r.score >= album.cutoff for r in report.above) and all(r.score < album.cutoff for r in report.below)
    assert [r.state for r in report.above] == ["auto"] * 12 and [r.state for r in report.below] == [""] * 12
    html = client.get(f"/albums/{album.pk}/audit").content.decode()
    assert f"cutoff {str(np.float32(album.cutoff))}" in html and html.count('class="result"') == 24
    assert client.get("/albums/").status_code == 200


@pytest.mark.parametrize("backend", ["memory", "pgvector"])
def test_the_count_the_cutoff_the_results_an_album_and_its_audit_agree_to_the_last_bit(
        tiny, ann, client, settings, media_root, backend):
    """12.9: `match_cutoff` sat a hair above the last match's stored score (the results' scores and
    the count's were computed two ways), so `score >= match_cutoff` counted one photo fewer
    than `match_count`, and an album's audit showed a photo "not in" at the cutoff's score.
    Searches mixing both score parts over planted categories, each checked for exact agreement."""
    settings.CLETIR_RANK_BACKEND = backend
    from tests.retrieval.search.test_search_core import planted_proxy_set

    rng = np.random.default_rng(35)
    t = text_vector(tiny, TEXT)
    q = rng.standard_normal(tiny.vision_dim)
    q /= np.linalg.norm(q)
    planted_proxy_set(tiny, TEXT, np.stack([q] * 4).astype(np.float32))
    client.force_login(ann)
    for n in range(4):
        lib = Library.objects.create(name=f"L{n}", owner=ann)
        scores, _ = planted_scores(rng, 400, 60, separation=4.0)
        vectors = vectors_scoring(tiny, t, scores, rng)
        # Image halves scoring like the text halves against the proxies: <q, V> = score.
        r = rng.standard_normal((len(scores), tiny.vision_dim))
        r -= np.outer(r @ q, q)
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        vectors[:, tiny.vlm_dim:] = scores[:, None] * q[None, :] + np.sqrt(1 - scores[:, None] ** 2) * r
        plant_photos(tiny, lib, vectors, start=1000 * (n + 1))
        search = new_search(ann, TEXT, libraries=[lib], lambda_override=0.5, top_n=400)
        assert run_search(search.pk) == {"search": search.pk, "status": "done"}
        search.refresh_from_db()
        count, cutoff = search.match_count, search.match_cutoff
        assert 0 < count < 200, search.match_estimate

        results = list(SearchResult.objects.filter(search=search).order_by("rank"))
        assert [r.rank for r in results if r.score >= cutoff] == list(range(1, count + 1))
        assert results[count - 1].score == cutoff
        body = client.get(f"/api/searches/{search.pk}/").json()
        listed = [row for page in (1, 2) for row in
                  client.get(f"/api/searches/{search.pk}/results/?size=200&page={page}").json()["results"]]
        only = client.get(f"/api/searches/{search.pk}/results/?matches_only=1&size=200").json()
        assert sum(r["score"] >= body["match_cutoff"] for r in listed) == body["match_count"] == only["count"] == count

        album = create_album_from_search(ann, search, f"album {n}")
        members = set(AlbumPhoto.objects.filter(album=album).values_list("asset_id", flat=True))
        assert members == {r.asset_id for r in results[:count]}
        report = audit(album, ann)
        assert all(r.score >= album.cutoff and r.state == "auto" for r in report.above)
        assert all(r.score < album.cutoff and r.state == "" for r in report.below)
        assert report.above[-1].asset_id == results[count - 1].asset_id
        assert report.below[0].asset_id == results[count].asset_id
        # The page reads the same: the last photo in shows the cutoff's very number, the first
        # one out a lower one.
        page = client.get(f"/albums/{album.pk}/audit").content.decode()
        shown = str(np.float32(cutoff))
        assert f'id="audit-cutoff">{shown}<' in page and f"{shown} · in" in page
        assert f"{str(np.float32(results[count].score))} · not in" in page and np.float32(results[count].score) < np.float32(cutoff)

        # A photo indexed later with the last match's very vector scores the cutoff: it joins.
        last = AssetEmbedding.objects.get(space=tiny, asset_id=results[count - 1].asset_id)
        twin = new_photo_file(media_root, lib, f"twin-{n}")
        add_indexed_photos(tiny, [twin], np.asarray(last.vector, dtype=np.float32)[None, :])
        assert AlbumPhoto.objects.filter(album=album, asset=twin).exists()
