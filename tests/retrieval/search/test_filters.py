"""Filters inside the search scope (issue 16): dates (upload time for photos without a capture
time), camera, keywords and file types narrow what is ranked, on both backends, through the
API and the pages, in refinements and in the albums saved from a search; the API's list
parameters are validated one way (django-filter)."""
from __future__ import annotations

import datetime as dt
from datetime import timedelta, timezone as dt_timezone

import numpy as np
import pytest

from assets.models import Asset, Library
from retrieval.albums.albums import album_photos, create_album_from_search
from retrieval.models import AlbumPhoto, Search, SearchResult
from retrieval.search.filters import PhotoFilters
from retrieval.search.ranking import Scope, pgvector, rank
from retrieval.search.service import Refinement, SearchInputError, SearchRequest, create_search, refine_search
from retrieval.search.tasks import run_search
from tests.retrieval.albums.test_albums import (  # noqa: F401 (fixtures)
    START, TEXT, PlantedEncoders, index, new_photo_file, plant_photos, vectors_scoring,
)
from tests.retrieval.search.test_cutoff import planted_scores
from tests.retrieval.search.test_search_web import api, queued  # noqa: F401 (fixture)
from tests.retrieval.search.test_search_core import (  # noqa: F401 (fixtures)
    brute_force, new_search, planted_space, query, text_vector, tiny,
)

pytestmark = pytest.mark.django_db
UTC = dt_timezone.utc


# ---------------------------------------------------------------------------- the filters themselves


def test_filters_round_trip_through_json_and_say_what_they_keep():
    filters = PhotoFilters.parse(dt.date(2021, 3, 1), dt.date(2021, 3, 31), " Canon ", "", ["  Golden  Gate", "golden gate",
                                                                                          "Fog"], ["jpg", "heic"])
    assert filters == PhotoFilters(dt.date(2021, 3, 1), dt.date(2021, 3, 31), "Canon", "", ("golden gate", "fog"),
                                   ("HEIF", "JPEG"))
    assert filters.to_json() == {"taken_from": "2021-03-01", "taken_to": "2021-03-31", "camera_make": "Canon",
                                 "keywords": ["golden gate", "fog"], "formats": ["HEIF", "JPEG"]}
    assert PhotoFilters.from_json(filters.to_json()) == filters
    assert filters.summary() == ("taken 2021-03-01 to 2021-03-31 (uploaded, for photos without a capture date) · "
                                 "camera make contains “Canon” · keywords: “golden gate”, “fog” · file type: HEIF, JPEG")
    assert PhotoFilters.from_json({}).is_empty and PhotoFilters().photos() is None and PhotoFilters().summary() == ""


def test_dates_use_the_upload_time_for_photos_without_a_capture_time(library):
    def photo(name, taken, uploaded):
        asset = Asset.objects.create(library=library, sha256=name.encode().hex().ljust(64, "0"), file=f"d/{name}.jpg",
                                     taken_at=taken)
        Asset.objects.filter(pk=asset.pk).update(created_at=uploaded)
        return asset.pk

    june, july = dt.datetime(2021, 6, 15, 12, tzinfo=UTC), dt.datetime(2021, 7, 15, 12, tzinfo=UTC)
    taken_june = photo("a", june, july)  # captured in June, uploaded in July
    uploaded_june = photo("b", None, june)  # no capture time: its upload counts
    taken_july = photo("c", july, june)  # captured in July: its June upload does not count
    last_day = photo("d", dt.datetime(2021, 6, 30, 23, 59, tzinfo=UTC), july)  # the last day is included
    filters = PhotoFilters.parse(dt.date(2021, 6, 1), dt.date(2021, 6, 30))
    assert set(filters.photos().values_list("pk", flat=True)) == {taken_june, uploaded_june, last_day}
    assert taken_july not in PhotoFilters.parse(taken_to=dt.date(2021, 6, 30)).photos().values_list("pk", flat=True)


def test_keywords_must_all_be_present_in_any_case_and_camera_and_type_narrow_too(library):
    def photo(name, keywords, make="", model="", fmt="JPEG"):
        return Asset.objects.create(library=library, sha256=name.encode().hex().ljust(64, "0"), file=f"k/{name}.jpg",
                                    keywords=keywords, camera_make=make, camera_model=model, format=fmt).pk

    both = photo("a", ["harbour", "fog", "boats"], "Canon Inc.", "EOS 5D")
    one = photo("b", ["harbour"], "NIKON CORPORATION", "D750", "PNG")
    photo("c", [], "Canon Inc.", "EOS R")
    kept = lambda **given: set(PhotoFilters.parse(**given).photos().values_list("pk", flat=True))  # noqa: E731
    assert kept(keywords=["Harbour", " FOG "]) == {both}
    assert kept(keywords=["harbour"]) == {both, one}
    assert kept(camera_make="nikon") == {one} and kept(camera_model="eos 5") == {both}
    assert kept(formats=["png"]) == {one}


# ---------------------------------------------------------------------------- ranking inside the filters


@pytest.mark.parametrize("how", [{"backend": "memory"}, {"backend": "pgvector"}], ids=["memory", "pgvector"])
def test_a_filter_keeping_one_percent_returns_every_photo_the_exact_ranking_has_inside_it(planted_space, library,
                                                                                         settings, how):
    """Planted dates: a filter keeps ~1% of a scope far larger than the exact-scan limit. Every
    photo of the unfiltered exact ranking inside the filter is returned, and the filtered ranking
    is the exact one of the filtered photos (recall 1.0), whichever backend ranks."""
    space, vectors, ids, in_small, small = planted_space
    settings.CLETIR_EXACT_RANK_MAX_ROWS = 500  # the scope (3000) is far above it: the graph, unfiltered
    rng = np.random.default_rng(9)
    days = rng.integers(0, 100, len(ids))  # capture day of each photo: one day keeps ~1%
    undated = rng.random(len(ids)) < 0.3  # a third have no capture time: their upload day counts
    day0 = dt.datetime(2022, 1, 1, 12, tzinfo=UTC)
    for d in range(100):
        Asset.objects.filter(pk__in=ids[(days == d) & ~undated].tolist()).update(taken_at=day0 + timedelta(days=d))
        Asset.objects.filter(pk__in=ids[(days == d) & undated].tolist()).update(taken_at=None,
                                                                                 created_at=day0 + timedelta(days=d))
    keep = days == 42
    scope = Scope((library.pk, small.pk), photos=PhotoFilters.parse(dt.date(2022, 2, 12), dt.date(2022, 2, 12)).photos())
    assert 15 <= keep.sum() <= 50
    # The statistics alone would send this scope to the graph; the filter is counted, and small.
    assert pgvector.choose_exact(scope) and not pgvector.choose_exact([library.pk, small.pk])
    for _ in range(5):
        u = query(rng)
        rows = [r.asset_id for r in rank(space, u, scope, 100, **how).rows]
        assert rows == brute_force(ids[keep].tolist(), vectors[keep], u, 100)
        unfiltered = [r.asset_id for r in rank(space, u, [library.pk, small.pk], 300, exact=True).rows]
        inside = [pk for pk in unfiltered if pk in set(ids[keep].tolist())]
        assert set(inside) <= set(rows)


def test_a_search_with_filters_ranks_and_counts_only_inside_them_and_its_album_keeps_them(tiny, ann, library, media_root,
                                                                                         index):
    """A text-only search with a date filter: results and the match estimate cover only the
    filtered photos; the album saved from it keeps the filter, and a newly indexed photo outside
    it does not join however well it scores, while one inside does."""
    rng = np.random.default_rng(21)
    t = text_vector(tiny, TEXT)
    scores, _ = planted_scores(rng, 400, 60, separation=4.0)
    assets = plant_photos(tiny, library, vectors_scoring(tiny, t, scores, rng), start=0)  # day i before START
    inside = {a.pk for a in assets if a.taken_at >= START - timedelta(days=199)}
    assert len(inside) == 200
    filters = {"taken_from": (START - timedelta(days=199)).date().isoformat(), "taken_to": START.date().isoformat()}
    search = new_search(ann, TEXT, text_only=True, top_n=400, filters=filters)
    assert run_search(search.pk) == {"search": search.pk, "status": "done"}
    search.refresh_from_db()
    stored = set(SearchResult.objects.filter(search=search).values_list("asset_id", flat=True))
    assert stored == inside and search.match_estimate["photos"] == 200
    assert 0 < search.match_count < 60

    album = create_album_from_search(ann, search, "Boats")
    assert album.filters == filters
    assert {p.asset_id for p in album_photos(album, ann)} <= inside
    outside_photo, inside_photo = new_photo_file(media_root, library, "late"), new_photo_file(media_root, library, "early")
    Asset.objects.filter(pk=inside_photo.pk).update(taken_at=START - timedelta(days=3))
    encoders = PlantedEncoders(tiny)
    encoders.queue = list(vectors_scoring(tiny, t, np.array([album.cutoff + 0.05, album.cutoff + 0.05]), rng))
    assert index(tiny, encoders) == (2, 0)
    joined = set(AlbumPhoto.objects.filter(album=album, asset__in=[outside_photo, inside_photo]).values_list("asset_id",
                                                                                                         flat=True))
    assert joined == {inside_photo.pk}


# ---------------------------------------------------------------------------- where filters enter


@pytest.mark.parametrize("payload, errors", [
    ({"taken_from": "2021-05-02", "taken_to": "2021-05-01"},
     {"taken_from": ["The first day (2021-05-02) is after the last (2021-05-01)."]}),
    ({"taken_from": "May 2021"}, {"taken_from": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]}),
    ({"formats": ["jpeg", "BMP"]}, {"formats": ["Unknown file type: BMP. One of: GIF, HEIF, JPEG, PNG, TIFF, WEBP."]}),
    ({"keywords": [f"k{i}" for i in range(11)]}, {"keywords": ["At most 10 keywords (this has 11)."]}),
    ({"keywords": ["x" * 101]}, {"keywords": ["A keyword has at most 100 characters: “xxxxxxxxxxxxxxxxxxxx…” is longer."]}),
    ({"camera_make": "c" * 101}, {"camera_make": ["At most 100 characters (this has 101)."]}),
])
def test_bad_filters_are_a_clear_400_naming_the_field(ann, library, queued, payload, errors):
    response = api(ann).post("/api/searches/", {"text": "boat", **payload}, format="json")
    assert response.status_code == 400 and response.json() == errors
    assert not Search.objects.exists() and queued == []


def test_the_api_takes_filters_shows_them_and_a_refinement_inherits_them(ann, library, queued):
    response = api(ann).post("/api/searches/", {
        "text": "boat", "taken_from": "2020-01-01", "taken_to": "2020-12-31", "camera_make": "Canon",
        "keywords": ["Harbour", "fog"], "formats": ["jpg"]}, format="json")
    assert response.status_code == 202
    expected = {"taken_from": "2020-01-01", "taken_to": "2020-12-31", "camera_make": "Canon", "camera_model": "",
                "keywords": ["harbour", "fog"], "formats": ["JPEG"]}
    assert response.json()["filters"] == expected
    parent = Search.objects.get()
    assert parent.filters == {k: v for k, v in expected.items() if v}
    child = refine_search(parent, ann, Refinement(negative_text="car"))
    assert child.filters == parent.filters
    assert api(ann).get(f"/api/searches/{child.pk}/").json()["filters"] == expected
    plain = create_search(ann, SearchRequest(text="boat"))
    assert plain.filters == {}
    with pytest.raises(SearchInputError) as refused:
        create_search(ann, SearchRequest(text="boat", formats=["raw"]))
    assert list(refused.value.errors) == ["formats"]


def test_the_page_s_filter_panel_searches_repopulates_and_shows_the_filters(ann, library, queued, client):
    client.force_login(ann)
    home = client.get("/search/").content.decode()
    assert '<details id="filters" >' in home and 'name="keywords"' in home and 'value="HEIF"' in home
    refused = client.post("/search/", {"text": "boat", "taken_from": "2021-05-02", "taken_to": "2021-05-01",
                                       "keywords": "Harbour, fog", "formats": ["PNG"], "seed": "0"})
    page = refused.content.decode()
    assert refused.status_code == 400 and '<details id="filters" open>' in page
    assert "is after the last" in page and 'value="Harbour, fog"' in page and 'value="PNG" checked' in page
    done = client.post("/search/", {"text": "boat", "taken_from": "2021-05-01", "keywords": "Harbour, fog",
                                    "formats": ["PNG"], "seed": "0"})
    search = Search.objects.get()
    assert done.status_code == 302 and search.filters == {"taken_from": "2021-05-01", "keywords": ["harbour", "fog"],
                                                         "formats": ["PNG"]}
    detail = client.get(f"/search/{search.pk}/").content.decode()
    assert "from 2021-05-01 (uploaded, for photos without a capture date) · keywords: “harbour”, “fog” · file type: PNG" in detail
    again = client.get(f"/search/?from={search.pk}").content.decode()
    assert 'value="2021-05-01"' in again and 'value="harbour, fog"' in again and '<details id="filters" open>' in again


# ---------------------------------------------------------------------------- list parameters (django-filter)


def test_every_list_endpoint_validates_its_parameters_the_same_way(tiny, ann, library, client):
    rng = np.random.default_rng(3)
    t = text_vector(tiny, TEXT)
    scores, _ = planted_scores(rng, 200, 30, separation=4.0)
    plant_photos(tiny, library, vectors_scoring(tiny, t, scores, rng), start=0)
    search = new_search(ann, TEXT, text_only=True, top_n=200)
    run_search(search.pk)
    search.refresh_from_db()
    album = create_album_from_search(ann, search, "Boats")
    client = api(ann)
    for url in (f"/api/assets/?library={library.pk}&", f"/api/searches/{search.pk}/results/?matches_only=1&",
                f"/api/albums/{album.pk}/photos/?"):
        refused = client.get(url + "sort=bogus")
        assert refused.status_code == 400 and list(refused.json()) == ["sort"], url
        assert refused.json()["sort"][0].startswith("One of: ")
    everything = client.get(f"/api/searches/{search.pk}/results/?size=200").json()["count"]
    for value, count in (("true", search.match_count), ("1", search.match_count), ("True", search.match_count),
                         ("false", everything), ("0", everything)):
        assert client.get(f"/api/searches/{search.pk}/results/?matches_only={value}&size=200").json()["count"] == count
    assert search.match_count < everything
    refused = client.get(f"/api/searches/{search.pk}/results/?matches_only=maybe")
    assert refused.status_code == 400 and refused.json() == {"matches_only": ["true or false (1 or 0)."]}
    assert client.get("/api/assets/?library=x").json() == {"library": ["A library id (an integer)."]}
    # A date order applies to the matches only; the whole top N stays by rank.
    ranks = [r["rank"] for r in client.get(f"/api/searches/{search.pk}/results/?sort=taken&size=200").json()["results"]]
    assert ranks == sorted(ranks)
