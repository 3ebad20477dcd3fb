"""The web process killed (SIGKILL) at random points of a zip upload, 20 times: every file under the
media root still belongs to a row, every row's file exists, and once the sweeper's grace period
has passed (1 s here) nothing temporary is left, in the media root or the system's temporary
folder. A last, complete upload of the same archive then stores what the kills interrupted.

The server is gunicorn on the test database; thumbnails are made in the web process itself
(eager tasks), so kills also land while renditions are placed. The request body is sent over
~0.6 s, so kills land while it arrives (Django spools it to disk) as well as while its photos
are stored. RANDOM_SEED reproduces a run.
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
from assets.models import Asset, Library, PendingFile
from assets.tasks import sweep_media_leftovers
from tests.faults.web_server import PHOTOS, WebServer, files_under, named_files, photo_archive, upload_body

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

KILLS = 20
RANDOM_SEED = int(os.environ.get("FAULT_RANDOM_SEED", "1812"))


def test_kills_during_zip_uploads_leave_no_orphans_and_no_spools(server_env, media_root, tmp_path, make_user, settings):
    env, system_tmp = server_env
    owner = make_user("ann")
    token = Token.objects.create(user=owner).key
    body, content_type = upload_body("trip.zip", photo_archive())
    server = WebServer(env, tmp_path / "web.log")
    rng = random.Random(RANDOM_SEED)
    answers, runs = Counter(), []
    try:
        # How long one complete upload takes here, to spread the kills over it.
        started = time.monotonic()
        status, _ = server.request("POST", upload_path(owner, "Warm-up"), token, body, content_type, seconds_to_send=0.6)
        full_upload = time.monotonic() - started
        assert status == 200

        for run in range(KILLS):  # a library each: every run stores its photos anew
            path = upload_path(owner, f"Trip {run}")
            outcome = {}
            sender = Thread(target=lambda: outcome.update(status=server.request(
                "POST", path, token, body, content_type, seconds_to_send=0.6)[0]))
            sender.start()
            time.sleep(rng.uniform(0.05, full_upload))
            stored = Asset.objects.filter(library__name=f"Trip {run}").count()
            server.kill_workers()
            sender.join(60)
            answers[outcome.get("status")] += 1
            runs.append((path, stored))
    finally:
        server.stop()

    print(f"\nseed {RANDOM_SEED}: full upload {full_upload:.2f} s; answers {dict(answers)} (None: killed first); "
          f"photos stored when each kill came: {[stored for _, stored in runs]}; PendingFiles left: "
          f"{PendingFile.objects.count()}; temporary files left: {len(list((media_root / 'incoming').iterdir()))}")
    assert answers[500] == 0
    # Right after the kills: no orphan file, no row without its file (files being placed when a
    # kill came are recorded as PendingFiles: in flight, not orphans).
    audit = audit_media()
    assert (audit.orphans, audit.missing) == ([], [])

    settings.CLETIR_MEDIA_GRACE_SECONDS = 1
    time.sleep(1.1)
    sweep_media_leftovers()
    assert list((media_root / "incoming").iterdir()) == []  # no spool, no part-* file
    assert list(system_tmp.iterdir()) == []  # nothing in the system's temporary folder either
    assert not PendingFile.objects.exists()
    assert files_under(media_root) == named_files()

    # The site goes on: the same archive again completes the two most interrupted uploads.
    server = WebServer(env, tmp_path / "web-after.log")
    try:
        for path, _ in sorted(runs, key=lambda run: run[1])[:2]:
            status, result = server.request("POST", path, token, body, content_type)
            assert status == 200 and result["stored"] + result["duplicates"] == PHOTOS and result["failed"] == 0
    finally:
        server.stop()
    assert files_under(media_root) == named_files()
    assert audit_media().clean


def upload_path(owner, library_name: str) -> str:
    return f"/api/libraries/{Library.objects.create(name=library_name, owner=owner).pk}/upload/"
