"""A library deleted while its photos are uploaded (and thumbnailed), and while they are indexed,
10 runs each, through a real web process: never a 500, and nothing of the library is left, no
row and no file. The delete lands at a random moment (RANDOM_SEED reproduces a run).

* upload: gunicorn with two workers, one serving a zip upload (thumbnails made in the request,
  eager tasks), the other the DELETE;
* indexing: a real Celery worker (tests.faults.paused_worker) has claimed a batch and is inside
  its forward passes when the DELETE arrives. The claim holds no lock (retrieval.indexing.claims),
  so the delete goes through at once; the batch's store then finds its photos gone and writes
  nothing.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter
from threading import Thread

import pytest
from rest_framework.authtoken.models import Token

from assets.media_audit import audit_media
from assets.models import Asset, Library, PendingFile, Rendition
from assets.tasks import sweep_media_leftovers
from retrieval.models import AssetEmbedding, IndexingClaim
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import space_for_profile
from retrieval.indexing.tasks import index_space
from tests.conftest import wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER
from tests.faults.web_server import WebServer, files_under, named_files, photo_archive, upload_body
from tests.photos import write_photos

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUNS = 10
RANDOM_SEED = int(os.environ.get("FAULT_RANDOM_SEED", "1812"))


def library_files(media_root, library_id: int) -> set[str]:
    return {name for name in files_under(media_root)
            if name.startswith((f"libraries/{library_id}/", f"renditions/{library_id}/"))}


def assert_nothing_left(media_root, settings) -> None:
    audit = audit_media()
    assert (audit.orphans, audit.missing) == ([], [])
    settings.CLETIR_MEDIA_GRACE_SECONDS = 1
    time.sleep(1.1)
    sweep_media_leftovers()
    assert list((media_root / "incoming").iterdir()) == []
    assert not PendingFile.objects.exists()
    assert files_under(media_root) == named_files()


def test_library_delete_racing_an_upload(server_env, media_root, tmp_path, make_user, settings):
    env, _ = server_env
    owner = make_user("ann")
    token = Token.objects.create(user=owner).key
    body, content_type = upload_body("trip.zip", photo_archive())
    server = WebServer(env, tmp_path / "web.log", workers=2)
    rng = random.Random(RANDOM_SEED)
    answers = Counter()
    try:
        warm_up = Library.objects.create(name="Warm-up", owner=owner)
        started = time.monotonic()
        assert server.request("POST", f"/api/libraries/{warm_up.pk}/upload/", token, body, content_type,
                              seconds_to_send=0.3)[0] == 200
        full_upload = time.monotonic() - started

        for run in range(RUNS):
            library = Library.objects.create(name=f"Trip {run}", owner=owner)
            upload = {}
            sender = Thread(target=lambda: upload.update(answer=server.request(
                "POST", f"/api/libraries/{library.pk}/upload/", token, body, content_type, seconds_to_send=0.3)))
            sender.start()
            time.sleep(rng.uniform(0.0, full_upload))
            deleted, _ = server.request("DELETE", f"/api/libraries/{library.pk}/", token)
            sender.join(120)
            uploaded, result = upload["answer"]
            answers[(uploaded, deleted)] += 1
            assert deleted == 204, server.log()[-3000:]
            assert uploaded in (200, 404, 409), (uploaded, result)
            if uploaded == 409:  # refused mid-way: every file answered, the rest not tried
                assert {o["reason"] for o in result["results"] if o["status"] == "failed"} == {"library_deleted"}
            assert not Asset.objects.filter(library_id=library.pk).exists()
            assert library_files(media_root, library.pk) == set()
    finally:
        server.stop()
    print(f"\nseed {RANDOM_SEED}: full upload {full_upload:.2f} s; (upload, delete) answers: {dict(answers)}")
    assert_nothing_left(media_root, settings)


def test_library_delete_racing_indexing(
    start_worker, paused_env, marks, tiny_model_dir, server_env, media_root, tmp_path, make_user, settings
):
    env, _ = server_env
    owner = make_user("ann")
    token = Token.objects.create(user=owner).key
    start_worker(broker=BROKER, queues="embed", module=PAUSED_WORKER, env={**paused_env, "CLETIR_INDEX_BATCH_SIZE": "4"})
    space = space_for_profile("tiny")
    activate_space(space)
    server = WebServer(env, tmp_path / "web.log")
    rng = random.Random(RANDOM_SEED)
    waits = []
    try:
        for run in range(RUNS):
            (marks.folder / "release").unlink(missing_ok=True)  # the next batch pauses again
            library = Library.objects.create(name=f"Harbour {run}", owner=owner)
            photos = [a.pk for a in write_photos(media_root, library, 8, start=8 * run)]
            batches_before = len(marks.of("embed"))
            index_space.delay(space.pk)
            marks.wait("embed", batches_before + 1)  # a batch is claimed and in its forward passes
            time.sleep(rng.uniform(0.0, 1.0))
            releaser = Thread(target=lambda pause=rng.uniform(0.0, 1.5): (time.sleep(pause), marks.release()))
            releaser.start()

            started = time.monotonic()
            deleted, detail = server.request("DELETE", f"/api/libraries/{library.pk}/", token)
            waits.append(round(time.monotonic() - started, 2))
            releaser.join()  # before the next run clears the release again
            # The batch goes on once released, and stores (nothing) after the delete.
            wait_for(lambda: not IndexingClaim.objects.filter(space=space).exists(), timeout=60,
                     message="the indexing run to end")

            assert deleted == 204, (detail, server.log()[-3000:])
            assert not Asset.objects.filter(pk__in=photos).exists()
            assert not AssetEmbedding.objects.filter(asset_id__in=photos).exists()
            assert not Rendition.objects.filter(asset_id__in=photos).exists()
            assert library_files(media_root, library.pk) == set()
    finally:
        marks.release()
        server.stop()
    print(f"\nseed {RANDOM_SEED}: seconds each delete took with a batch in flight: {waits}")
    assert_nothing_left(media_root, settings)
