"""Admin of libraries, photos and spaces: counts, re-index and activate actions."""
from __future__ import annotations

import pytest

from assets.models import Asset, Library
from retrieval.models import AssetEmbedding, EmbeddingSpace, IndexingFailure
from retrieval.indexing.tasks import index_space

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_with_space(client, django_user_model, monkeypatch, make_user):
    monkeypatch.setattr(index_space, "delay", lambda space_id: None)
    root = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(root)
    space = EmbeddingSpace.objects.create(name="s", profile="tiny", vlm_model="v", vision_model="d", generator_model="g",
                                          vlm_dim=2, vision_dim=2, fingerprint="f", is_active=True, is_serving=True)
    library = Library.objects.create(name="Harbour", owner=make_user("ann"))
    assets = [Asset.objects.create(library=library, sha256=f"{i:064x}", file=f"x/{i}.jpg") for i in range(3)]
    AssetEmbedding.objects.create(asset=assets[0], space=space, vector=[1, 0, 0, 1])
    IndexingFailure.objects.create(asset=assets[1], space=space, error="OSError: broken")
    return client, space, library, assets


def test_library_admin_shows_index_counts_and_reindexes(admin_client_with_space):
    client, space, library, assets = admin_client_with_space
    page = client.get("/admin/assets/library/").content.decode()
    assert "1 indexed · 1 pending · 1 failed" in page
    client.post("/admin/assets/library/", {"action": "reindex_libraries", "_selected_action": [library.pk]})
    assert not AssetEmbedding.objects.exists() and not IndexingFailure.objects.exists()


def test_asset_admin_filters_by_index_status(admin_client_with_space):
    client, space, library, assets = admin_client_with_space
    failed = client.get("/admin/assets/asset/?indexed=failed").content.decode()
    assert f"/admin/assets/asset/{assets[1].pk}/change/" in failed
    assert f"/admin/assets/asset/{assets[0].pk}/change/" not in failed
    pending = client.get("/admin/assets/asset/?indexed=pending").content.decode()
    assert f"/admin/assets/asset/{assets[2].pk}/change/" in pending
    client.post("/admin/assets/asset/", {"action": "reindex_assets", "_selected_action": [assets[1].pk]})
    assert not IndexingFailure.objects.exists() and AssetEmbedding.objects.count() == 1


def test_space_admin_progress_and_activate(admin_client_with_space, django_capture_on_commit_callbacks):
    client, space, library, assets = admin_client_with_space
    other = EmbeddingSpace.objects.create(name="other", profile="tiny", vlm_model="v", vision_model="d",
                                          generator_model="g", vlm_dim=2, vision_dim=2, fingerprint="o")
    page = client.get("/admin/retrieval/embeddingspace/").content.decode()
    assert "1 / 3 indexed, 1 failed (66% done)" in page
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/admin/retrieval/embeddingspace/", {"action": "activate", "_selected_action": [other.pk]})
    other.refresh_from_db()
    space.refresh_from_db()
    assert other.is_active and not other.is_serving
    assert space.is_serving and not space.is_active


def test_worker_heartbeats_show_each_process_s_ranking_backend_and_copy(admin_client_with_space):
    from django.utils import timezone

    from retrieval.models import WorkerHeartbeat

    client, space, library, assets = admin_client_with_space
    WorkerHeartbeat.objects.create(hostname="search@gpu1", queues=["search"], pid=1, last_seen=timezone.now(), ranking={
        "4242": {"backends": {str(space.pk): {"backend": "memory", "reason": "auto: cuda"}},
                 "copies": {str(space.pk): {"photos": 1_000_000, "mb": 2157.0, "device": "cuda:0"}}},
        "4243": {"backends": {str(space.pk): {"backend": "pgvector", "reason": "over the memory cap"}}, "copies": {}},
    })
    page = client.get("/admin/retrieval/workerheartbeat/").content.decode()
    assert f"pid 4242: space {space.pk} by memory, 1,000,000 photos, 2157.0 MB on cuda:0" in page
    assert f'title="over the memory cap">pid 4243: space {space.pk} by pgvector<' in page
