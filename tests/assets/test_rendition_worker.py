"""Renditions made by a real `celery worker` process (prefork, filesystem broker): libvips is
started in the pool process that renders, and many stored photos are one task, not one each."""
from __future__ import annotations

import io
import json

import pytest

from assets.ingest import ingest_file
from assets.models import Asset, Rendition
from tests.conftest import wait_for

from .conftest import image_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 12


@pytest.fixture
def real_broker():
    """Tasks go to the broker, not run in this process (the assets tests' default)."""
    from cletir_site.celery import app

    app.conf.task_always_eager = False  # the autouse eager_celery fixture restores it


def test_a_worker_makes_every_stored_photos_renditions_in_few_tasks(real_broker, start_worker, library, media_root, tmp_path):
    # Stored one by one, as an upload of many files does, before the worker takes the first task
    # (how many tasks run while photos keep arriving depends on the machine's speed;
    # tests/assets/test_rendition_batches.py pins that rule).
    from cletir_site.broker import FILESYSTEM_URL, filesystem_options, filesystem_results, point_app_at
    from cletir_site.celery import app

    broker = tmp_path / "broker"
    point_app_at(app, FILESYSTEM_URL, filesystem_results(broker), filesystem_options(broker, 0.05))
    for index in range(PHOTOS):
        data = image_bytes("JPEG", size=(1200, 900), seed=index)
        assert ingest_file(library, io.BytesIO(data), f"p{index}.jpg").status == "stored"
    worker = start_worker(broker="filesystem", queues="default", env={"CLETIR_PRELOAD_MODELS": "0"})

    wait_for(lambda: not Asset.objects.filter(status=Asset.Status.PENDING).exists(), timeout=120,
             message="renditions made")

    assert set(Asset.objects.values_list("status", flat=True)) == {"ready"}, worker.log()
    assert Rendition.objects.count() == 2 * PHOTOS
    assert {(r.width, r.height) for r in Rendition.objects.all()} == {(1200, 900), (320, 240)}
    # The tasks that ran, by their stored results: the one queued when the first photo was stored
    # did them all.
    results = [json.loads(p.read_text())["result"] for p in (tmp_path / "broker" / "results").iterdir()]
    assert len(results) == 1, results
    assert sum(r["made"] for r in results) == PHOTOS
    assert "libvips did not render" not in worker.log()
    assert "VIPS:" not in worker.log()  # libvips' chatter stays out of the worker's log
