"""Abuse limits: searches that generate proxies and uploads, with clear 429s."""
from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from assets.models import Library
from retrieval.search import service as search_service
from retrieval.models import EmbeddingSpace, ProxySet, Search

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann(make_user, monkeypatch):
    monkeypatch.setattr(search_service, "queue_search", lambda search: None)
    return make_user("ann")


@pytest.fixture
def space():
    return EmbeddingSpace.objects.create(name="s", profile="tiny", vlm_model="v", vision_model="d",
                                         generator_model="g", vlm_dim=2, vision_dim=2, fingerprint="f",
                                         is_active=True, is_serving=True)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_only_searches_that_generate_count_against_the_hourly_quota(ann, space, settings, client, make_user):
    settings.CLETIR_GENERATING_SEARCHES_PER_HOUR = 2
    sailboat = ProxySet.objects.create(query="sailboat", space=space, generator_key="g", seeds=[0, 1, 2, 3],
                                       seeds_key="0,1,2,3", prompt="a photo of a sailboat.", features=b"")
    net = ProxySet.objects.create(query="fishing net", space=space, generator_key="g", seeds=[0, 1, 2, 3],
                                  seeds_key="0,1,2,3", prompt="a photo of a fishing net.", features=b"")
    # Ann searched "sailboat" the day before (outside the hour); Bob searched "fishing net".
    Search.objects.create(user=ann, text="sailboat", k=4, status=Search.Status.DONE, proxy_set=sailboat)
    Search.objects.filter(user=ann).update(created_at=timezone.now() - timedelta(days=1))
    Search.objects.create(user=make_user("bob"), text="fishing net", k=4, status=Search.Status.DONE, proxy_set=net)
    for text in ("harbour crane", "lighthouse"):
        assert api(ann).post("/api/searches/", {"text": text, "k": 4}, format="json").status_code == 202

    refused = api(ann).post("/api/searches/", {"text": "fishing net", "k": 4}, format="json")

    assert refused.status_code == 429
    assert refused.json()["detail"].startswith(
        "You have run 2 searches that generate new images in the last hour, the most this site allows (2).")
    assert int(refused["Retry-After"]) > 0
    # Bob's cached "fishing net" does not make it free for Ann (it would tell her Bob searched it);
    # her own cached category costs no GPU time: still allowed, and so is text only.
    assert api(ann).post("/api/searches/", {"text": "Sailboat", "k": 4}, format="json").status_code == 202
    assert api(ann).post("/api/searches/", {"text": "fishing net", "text_only": True}, format="json").status_code == 202
    # The page says the same, with the same status.
    client.force_login(ann)
    page = client.post("/search/", {"text": "fishing net", "k": "4", "seed": "0"})
    assert page.status_code == 429 and "the most this site allows (2)" in page.content.decode()
    assert Search.objects.filter(user=ann, text="fishing net", text_only=False).count() == 0


def test_finished_searches_with_cached_proxies_do_not_count(ann, space, settings):
    settings.CLETIR_GENERATING_SEARCHES_PER_HOUR = 1
    Search.objects.create(user=ann, text="old", k=4, status=Search.Status.DONE, timings={"proxies_cached": True})
    Search.objects.create(user=ann, text="broken", k=4, status=Search.Status.FAILED)
    assert api(ann).post("/api/searches/", {"text": "new one", "k": 4}, format="json").status_code == 202
    assert api(ann).post("/api/searches/", {"text": "another", "k": 4}, format="json").status_code == 429


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_upload_quota_counts_stored_and_refused_files(ann, settings, media_root):
    settings.CLETIR_UPLOAD_FILES_PER_HOUR = 3
    library = Library.objects.create(name="L", owner=ann)
    url = f"/api/libraries/{library.pk}/upload/"
    first = api(ann).post(url, {"files": [SimpleUploadedFile("a.jpg", _jpeg(1)), SimpleUploadedFile("b.txt", b"text")]},
                          format="multipart")
    assert first.status_code == 200 and first.json()["stored"] == 1 and first.json()["rejected"] == 1
    over = api(ann).post(url, {"files": [SimpleUploadedFile("c.jpg", _jpeg(2)), SimpleUploadedFile("d.jpg", _jpeg(3))]},
                         format="multipart")
    assert over.status_code == 429
    assert over.json()["detail"].startswith("Upload limit reached: 2 files in the last hour, at most 3 per hour")
    assert api(ann).post(url, {"files": [SimpleUploadedFile("c.jpg", _jpeg(2))]}, format="multipart").status_code == 200


def test_query_length_is_limited_everywhere(ann, space, client):
    long = "x" * 301
    assert api(ann).post("/api/searches/", {"text": long}, format="json").json() == {
        "text": ["At most 300 characters (this has 301)."]}
    client.force_login(ann)
    page = client.post("/search/", {"text": long, "seed": "0"})
    assert page.status_code == 400 and "At most 300 characters (this has 301)." in page.content.decode()
