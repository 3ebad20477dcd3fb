"""Deletes that always work: a library or a photo deleted while its photos are indexed,
thumbnailed or uploaded is deleted, with every row and file, or answered 409; never a 500.

The work in flight runs in a thread with its own database connection, paused inside its
transaction at the instant that used to break the delete. tests/faults/test_delete_races.py
races real processes.
"""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from django.db import connection
from rest_framework.test import APIClient

from assets import renditions, services
from assets.ingest import ingest_file
from assets.models import Asset, Library, PendingFile, Rendition
from retrieval.engine.photo_batches import PhotoBatchPreparer
from retrieval.indexing.photos import embed_batch
from retrieval.models import AssetEmbedding, EmbeddingSpace
from tests.test_libraries_web import jpeg_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ann(make_user):
    return make_user("ann")


@pytest.fixture
def library(ann, media_root, monkeypatch):
    monkeypatch.setattr("assets.ingest._queue_renditions", lambda *args: None)
    monkeypatch.setattr("assets.ingest._announce_stored", lambda asset_id: None)
    library = Library.objects.create(name="Harbour", owner=ann)
    for seed in range(3):
        ingest_file(library, io.BytesIO(jpeg_bytes(seed)), f"{seed}.jpg")
    return library


@pytest.fixture
def space():
    return EmbeddingSpace.objects.create(name="s", profile="tiny", vlm_model="v", vision_model="d",
                                         generator_model="g", vlm_dim=2, vision_dim=2, fingerprint="f",
                                         is_active=True, is_serving=True)


def all_files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


class InFlight:
    """Work in a thread of its own (its own connection), paused where the test says."""

    def __init__(self, work):
        self.paused = threading.Event()
        self.error: BaseException | None = None
        self.result = None

        def run():
            try:
                self.result = work(self)
            except BaseException as exc:
                self.error = exc
            finally:
                self.paused.set()
                connection.close()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def pause(self, seconds: float = 1.0) -> None:
        """Called by the work: tell the test we are here, and give its delete time to start."""
        self.paused.set()
        time.sleep(seconds)

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self


class SlowEncoders:
    """The encoders, slow: the indexing batch has claimed its photos (in a transaction that has
    committed: no lock is held while photos are decoded and embedded) and is about to store."""

    device = torch.device("cpu")

    def __init__(self, flight: InFlight):
        self.flight = flight

    def photo_preparer(self, threads: int, **options):
        return PhotoBatchPreparer(None, "cpu", torch.float32, threads)

    def encode_prepared(self, prepared):
        self.flight.pause()
        n = len(prepared.decoded)
        return torch.full((n, 2), 0.5 ** 0.5), torch.full((n, 2), 0.5 ** 0.5)


def test_library_delete_during_an_indexing_batch_succeeds_and_leaves_no_vectors(library, space, media_root):
    indexing = InFlight(lambda flight: embed_batch(space, SlowEncoders(flight), batch_size=10))
    indexing.paused.wait(10)

    response = api(library.owner).delete(f"/api/libraries/{library.pk}/")

    indexing.join()
    # The delete did not wait for the batch (its claim holds no lock); the batch's store found
    # the photos gone and wrote nothing, without an error.
    assert indexing.error is None and indexing.result == (0, 0)
    assert response.status_code == 204
    assert not Library.objects.exists() and not Asset.objects.exists() and not AssetEmbedding.objects.exists()
    assert all_files(media_root) == set() and not PendingFile.objects.exists()


def test_photo_delete_during_its_renditions_leaves_no_rendition_file(library, media_root, monkeypatch):
    photo = Asset.objects.order_by("pk").first()
    real_render_job = renditions.render_job

    def render(flight: InFlight):
        def rendering_slowly(job):  # the files are encoded; nothing is stored yet
            encoded = real_render_job(job)
            flight.pause()
            return encoded

        monkeypatch.setattr(renditions, "render_job", rendering_slowly)
        return renditions.make_renditions(photo.pk)

    rendering = InFlight(render)
    rendering.paused.wait(10)

    response = api(library.owner).delete(f"/api/assets/{photo.pk}/")

    rendering.join()
    assert response.status_code == 204 and rendering.error is None and rendering.result == []
    assert not Asset.objects.filter(pk=photo.pk).exists() and not Rendition.objects.exists()
    assert all_files(media_root) == set(Asset.objects.values_list("file", flat=True))  # the two other photos
    assert not PendingFile.objects.exists()


def test_a_delete_that_cannot_get_its_locks_answers_409_and_deletes_nothing(library, media_root, monkeypatch):
    monkeypatch.setattr(services, "LOCK_TIMEOUT", "300ms")

    def hold_a_photo(flight):
        from django.db import transaction

        with transaction.atomic():
            list(Asset.objects.filter(library=library).select_for_update()[:1])
            flight.pause(2.0)

    holding = InFlight(hold_a_photo)
    holding.paused.wait(10)

    response = api(library.owner).delete(f"/api/libraries/{library.pk}/")

    holding.join()
    assert response.status_code == 409
    assert response.json() == {"detail": "The library was not deleted. Its photos are busy being processed right now; "
                                         "nothing was deleted. Try again in a moment."}
    assert Asset.objects.filter(library=library).count() == 3 and len(all_files(media_root)) == 3


def test_library_delete_page_answers_409_when_busy(library, client, monkeypatch):
    def busy(library):
        raise services.DeleteBusy()

    monkeypatch.setattr("assets.views.delete_library", busy)
    client.force_login(library.owner)
    response = client.post(f"/libraries/{library.pk}/delete")
    assert response.status_code == 409
    assert "“Harbour” was not deleted. Its photos are busy being processed right now" in response.content.decode()


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
