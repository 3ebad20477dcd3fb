"""Proxy images stay on the device until the ranking is stored; their files follow, and until
then every face shows a placeholder (never a broken image)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from rest_framework.test import APIClient

from retrieval.engine.generator import load_generator
from retrieval.models import ProxyImage, Search
from retrieval.search import proxies, runner
from retrieval.search.proxies import get_or_generate_proxy_set, proxy_features, write_proxy_images
from retrieval.search.tasks import run_search
from tests.retrieval.search.test_search_core import new_search, plant, tiny, unit_rows  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def written_after(monkeypatch):
    """What the search looked like each time proxy images were written (status, results)."""
    seen: list[tuple[str, int]] = []
    real = runner.write_proxy_images

    def spy(*sets):
        search = Search.objects.filter(status__in=("ranking", "done")).order_by("-pk").first()
        seen.append((search.status, search.results.count()) if search else ("none", 0))
        return real(*sets)

    monkeypatch.setattr(runner, "write_proxy_images", spy)
    return seen


def test_a_set_is_stored_with_its_features_and_its_image_files_follow(tiny, ann, client):
    proxy_set, generated = get_or_generate_proxy_set(tiny, "red kite", [3, 4])
    assert generated and proxy_features(proxy_set).shape == (2, tiny.vision_dim)
    images = list(proxy_set.images.all())
    assert [(i.index, i.seed, i.file.name) for i in images] == [(0, 3, ""), (1, 4, "")]

    search = new_search(ann, "red kite")
    Search.objects.filter(pk=search.pk).update(proxy_set=proxy_set, status="done", k=2)
    api = APIClient()
    api.force_authenticate(ann)
    client.force_login(ann)
    payload = api.get(f"/api/searches/{search.pk}/").json()
    assert [p["image_url"] for p in payload["proxies"]] == [None, None]
    page = client.get(f"/search/{search.pk}/").content.decode()
    assert page.count('class="proxy-pending"') == 2 and f"/search/{search.pk}/proxies/" not in page
    assert client.get(f"/search/{search.pk}/proxies/0").status_code == 404

    write_proxy_images()

    expected = load_generator("tiny").generate("red kite", [3, 4])
    for row, picture in zip(proxy_set.images.order_by("index"), expected):
        assert row.file.name == f"proxies/{proxy_set.pk}/{row.index}.webp"
        with Image.open(row.file.path) as written:  # lossy WebP of the generated image
            assert np.abs(np.asarray(written, dtype=float) - np.asarray(picture, dtype=float)).mean() < 8
    payload = api.get(f"/api/searches/{search.pk}/").json()
    assert [p["image_url"] for p in payload["proxies"]] == [
        f"http://testserver/search/{search.pk}/proxies/{i}" for i in (0, 1)]
    page = client.get(f"/search/{search.pk}/").content.decode()
    assert 'class="proxy-pending"' not in page and page.count(f"/search/{search.pk}/proxies/") == 2
    response = client.get(f"/search/{search.pk}/proxies/1")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"


def test_a_search_writes_its_proxy_images_once_its_results_are_stored(tiny, ann, library, written_after):
    rng = np.random.default_rng(5)
    plant(tiny, library, np.concatenate([unit_rows(rng, 20, 32), unit_rows(rng, 20, 32)], axis=1))
    search = new_search(ann, "sailboat")

    assert run_search(search.pk) == {"search": search.pk, "status": "done"}

    assert written_after == [("done", 20)]
    search.refresh_from_db()
    assert all(row.file and row.file.storage.exists(row.file.name) for row in search.proxy_set.images.all())


def test_images_a_dead_worker_never_wrote_are_made_again_from_their_seeds(tiny, ann, library):
    rng = np.random.default_rng(6)
    plant(tiny, library, np.concatenate([unit_rows(rng, 10, 32), unit_rows(rng, 10, 32)], axis=1))
    proxy_set, _ = get_or_generate_proxy_set(tiny, "sailboat", [0, 1, 2, 3])
    proxies._unwritten.clear()  # the process that generated them died before writing them
    calls = tiny.generator_calls.calls
    assert len(calls) == 1

    search = new_search(ann, "sailboat")  # the same query, seeds and space: the cached set
    assert run_search(search.pk) == {"search": search.pk, "status": "done"}

    search.refresh_from_db()
    # No earlier search of Ann's used the set: for her it is not "cached" (cache_privacy).
    assert search.proxy_set_id == proxy_set.pk and search.timings["proxies_cached"] is False
    assert calls == [("sailboat", [0, 1, 2, 3])] * 2  # made again after the ranking, same seeds
    assert all(row.file for row in ProxyImage.objects.filter(proxy_set=proxy_set))
