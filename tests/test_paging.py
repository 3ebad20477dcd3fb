"""One paging rule on every paginated API endpoint: `size` from 1 to 200 and `page` from 1 (or
`last`); anything else is a 400 naming the parameter, a page past the end a 404."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from assets.models import Library, RejectedFile
from retrieval.models import Album, AlbumPhoto, Search
from tests.photos import write_photos
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann_api(make_user, media_root):
    ann = make_user("ann")
    library = Library.objects.create(name="Harbour", owner=ann)
    photos = write_photos(media_root, library, 3)
    for name in ("a.txt", "b.txt", "c.txt"):
        RejectedFile.objects.create(library=library, original_name=name, reason="not_an_image", message="Not an image.")
    search = Search.objects.create(user=ann, text="boat", k=1, status=Search.Status.DONE, result_count=3, match_count=3)
    search.libraries.set([library])
    store_ranked(search, [(photo, 1 - rank / 10, 0.5, 0.5) for rank, photo in enumerate(photos, 1)])
    Search.objects.create(user=ann, text="harbour", k=1)
    Search.objects.create(user=ann, text="lighthouse", k=1)
    album = Album.objects.create(user=ann, name="Boats", query_vector=b"", cutoff=0.1, source_search=search)
    album.libraries.set([library])
    for photo in photos:
        AlbumPhoto.objects.create(album=album, asset=photo, score=0.9)
    client = APIClient()
    client.force_authenticate(ann)
    client.endpoints = {  # each paginated endpoint, holding 3 items
        "/api/assets/": f"/api/assets/?library={library.pk}",
        "/api/libraries/{id}/rejected/": f"/api/libraries/{library.pk}/rejected/",
        "/api/searches/": "/api/searches/",
        "/api/searches/{id}/results/": f"/api/searches/{search.pk}/results/",
        "/api/albums/{id}/photos/": f"/api/albums/{album.pk}/photos/",
    }
    return client


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def test_every_paginated_endpoint_documents_the_rule(ann_api):
    schema = ann_api.get("/api/schema/?format=json").json()
    paginated = {}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            params = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
            if "size" in params or "page" in params:
                paginated[path] = params
    assert sorted(paginated) == sorted(ann_api.endpoints)  # a new paginated endpoint joins this test
    for path, params in paginated.items():
        assert params["size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 48}, path
        assert params["page"]["schema"] == {
            "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["last"]}]}, path
        assert "other values answer 400" in params["size"]["description"], path


@pytest.mark.parametrize("size", ["0", "-5", "100000", "201", "abc", "1.5", "٣"])
def test_a_size_out_of_range_is_a_400_naming_size_everywhere(ann_api, size):
    for url in ann_api.endpoints.values():
        response = ann_api.get(with_query(url, f"size={size}"))
        assert response.status_code == 400, (url, response.status_code)
        assert response.json() == {"size": ["A whole number from 1 to 200."]}, url


@pytest.mark.parametrize("page", ["0", "-1", "x", "2.0"])
def test_a_page_that_is_no_page_number_is_a_400_naming_page_everywhere(ann_api, page):
    for url in ann_api.endpoints.values():
        response = ann_api.get(with_query(url, f"page={page}"))
        assert response.status_code == 400, (url, response.status_code)
        assert response.json() == {"page": ["A page number from 1, or 'last'."]}, url


def test_a_page_past_the_end_is_a_404_everywhere(ann_api):
    for url in ann_api.endpoints.values():
        response = ann_api.get(with_query(url, "size=2&page=3"))
        assert response.status_code == 404, url
        assert response.json() == {"detail": "Page 3 is past the last page."}, url


def test_valid_pages_and_sizes_are_served_everywhere(ann_api):
    for url in ann_api.endpoints.values():
        full = ann_api.get(with_query(url, "size=200")).json()
        assert full["count"] == 3 and len(full["results"]) == 3 and full["next"] is None, url
        assert len(ann_api.get(url).json()["results"]) == 3, url  # default 48
        second = ann_api.get(with_query(url, "size=2&page=2")).json()
        assert len(second["results"]) == 1 and second["previous"] is not None, url
        assert ann_api.get(with_query(url, "size=2&page=last")).json()["results"] == second["results"], url
        assert len(ann_api.get(with_query(url, "size=&page=")).json()["results"]) == 3, url  # empty: not given
