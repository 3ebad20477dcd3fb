"""Files and rows together: a kill at any instant of placing or removing a file leaves rows and
files that agree, or a PendingFile that the sweeper resolves once the grace period is over.

A kill is played by an exception at the chosen instant with the in-process clean-up switched
off (`settle_quietly` does nothing), which leaves exactly what a killed process leaves. The
fault suite (tests/faults/test_upload_kills.py) kills real processes.
"""
from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from assets import ingest as ingest_module
from assets import media, services
from assets.ingest import ingest_file
from assets.media_audit import audit_media
from assets.models import Asset, PendingFile, Rendition
from assets.renditions import make_renditions
from assets.tasks import sweep_media_leftovers

from .conftest import image_bytes

pytestmark = pytest.mark.django_db


class Killed(BaseException):
    """The process died here: nothing after this point runs, no clean-up either."""


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def named_files() -> set[str]:
    return set(Asset.objects.values_list("file", flat=True)) | set(Rendition.objects.values_list("file", flat=True))


@pytest.fixture
def killed_after(monkeypatch):
    """killed_after("move") / ("save"): the process dies right after the file was moved into
    place (before the row's transaction commits), or right after the row was saved (before the
    file moved)."""
    monkeypatch.setattr(media, "settle_quietly", lambda ids: None)

    def arm(step: str) -> None:
        if step == "move":
            real_move = media.move_into_media

            def move_then_die(temp, name):
                real_move(temp, name)
                raise Killed()

            monkeypatch.setattr(media, "move_into_media", move_then_die)
        else:
            real_save = ingest_module._save_stored

            def save_then_die(asset):
                real_save(asset)
                raise Killed()

            monkeypatch.setattr(ingest_module, "_save_stored", save_then_die)

    return arm


@pytest.mark.parametrize("step", ["move", "save"])
def test_a_kill_while_placing_leaves_a_pending_file_that_the_sweep_resolves(
    settings, library, media_root, killed_after, step
):
    killed_after(step)
    with pytest.raises(Killed):
        ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=1)), "a.jpg")

    assert not Asset.objects.exists()
    pending = PendingFile.objects.get()
    placed = (media_root / pending.name).exists()
    assert placed == (step == "move")  # killed after the rename: a file no row names
    audit = audit_media()
    assert audit.orphans == [] and audit.missing == [] and audit.pending == 1  # in flight, not an orphan

    assert sweep_media_leftovers() == {"temporary_files_removed": 0, "temporary_bytes_removed": 0,
                                       "pending_files_removed": 0}  # younger than the grace period
    settings.CLETIR_MEDIA_GRACE_SECONDS = 0
    assert sweep_media_leftovers()["pending_files_removed"] == int(placed)
    assert all_files(media_root) == set() and not PendingFile.objects.exists()


def test_pending_file_of_a_photo_stored_after_all_keeps_its_file(
    settings, library, media_root, killed_after, monkeypatch
):
    data = image_bytes("JPEG", seed=2)
    killed_after("move")
    with pytest.raises(Killed):
        ingest_file(library, io.BytesIO(data), "a.jpg")
    monkeypatch.undo()  # the site restarts
    # The same photo uploaded again, completely: its row names the file the killed upload placed.
    stored = ingest_file(library, io.BytesIO(data), "a.jpg")
    assert stored.status == "stored"

    settings.CLETIR_MEDIA_GRACE_SECONDS = 0
    assert sweep_media_leftovers()["pending_files_removed"] == 0
    assert all_files(media_root) == named_files() == {Asset.objects.get().file.name}
    assert not PendingFile.objects.exists()


def test_the_loser_of_two_concurrent_uploads_of_one_photo_leaves_nothing(transactional_db, library, media_root, monkeypatch):
    """Both uploads are past the duplicate check before either saves: the unique constraint decides."""
    data = image_bytes("JPEG", seed=3)
    both_checked = threading.Barrier(2, timeout=10)
    real_inspect = ingest_module.inspect_image

    def inspect_in_step(path):
        both_checked.wait()
        return real_inspect(path)

    monkeypatch.setattr(ingest_module, "inspect_image", inspect_in_step)
    outcomes = []

    def upload(name):
        try:
            outcomes.append(ingest_file(library, io.BytesIO(data), name))
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(name,)) for name in ("a.jpg", "b.jpg")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    asset = Asset.objects.get()
    assert sorted((o.status, o.asset_id) for o in outcomes) == [("duplicate", asset.pk), ("stored", asset.pk)]
    assert asset.file.name in all_files(media_root) == named_files()  # (renditions ran on commit)
    assert not PendingFile.objects.exists()


def test_a_kill_after_a_delete_commits_leaves_files_the_sweep_removes(settings, library, media_root, monkeypatch):
    outcome = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=4)), "a.jpg")
    make_renditions(outcome.asset_id)
    assert len(all_files(media_root)) == 3  # the photo, its thumbnail and preview
    monkeypatch.setattr(services, "settle_quietly", lambda ids: None)  # killed before the files went

    services.delete_library(library)

    assert not Asset.objects.exists() and len(all_files(media_root)) == 3
    assert PendingFile.objects.count() == 3
    assert audit_media().orphans == []  # being removed, not forgotten
    settings.CLETIR_MEDIA_GRACE_SECONDS = 0
    assert sweep_media_leftovers()["pending_files_removed"] == 3
    assert all_files(media_root) == set()
    # The library's folders went with their last files; the top folders stay.
    assert sorted(p.name for p in media_root.iterdir()) == ["incoming", "libraries", "renditions"]


def test_deleting_a_photo_removes_its_files_once_the_delete_commits(
    library, media_root, django_capture_on_commit_callbacks
):
    kept = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=5)), "kept.jpg")
    gone = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=6)), "gone.jpg")
    make_renditions(gone.asset_id)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.delete_assets(Asset.objects.filter(pk=gone.asset_id)) == 1

    assert all_files(media_root) == named_files() == {Asset.objects.get(pk=kept.asset_id).file.name}
    assert not PendingFile.objects.exists()


def test_settling_keeps_a_file_that_a_row_or_another_pending_file_names(library, media_root):
    stored = ingest_file(library, io.BytesIO(image_bytes("JPEG", seed=7)), "a.jpg")
    name = Asset.objects.get(pk=stored.asset_id).file.name
    stale = PendingFile.objects.create(name=name)  # left by a killed upload of the same photo
    assert media.settle_pending([stale.pk]) == 0
    assert (media_root / name).exists()

    loose = media_root / "libraries" / "9" / "ab" / "loose.jpg"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(b"x")
    first, second = (PendingFile.objects.create(name="libraries/9/ab/loose.jpg") for _ in range(2))
    assert media.settle_pending([first.pk]) == 0  # another upload of it is still in flight
    assert loose.exists()
    assert media.settle_pending([second.pk]) == 1
    assert not loose.exists() and not (media_root / "libraries" / "9").exists()
    assert not PendingFile.objects.exists()


def test_temporary_files_are_removed_after_the_grace_period_only(settings, media_root):
    incoming = media.incoming_dir()
    old_spool = incoming / "tmpab12.upload.zip"
    old_part = incoming / "part-xyz"
    fresh = incoming / "tmpcd34.upload.zip"
    for path, size in ((old_spool, 5000), (old_part, 10), (fresh, 7)):
        path.write_bytes(b"\0" * size)
    hour_ago = time.time() - 3601
    for path in (old_spool, old_part):
        os.utime(path, (hour_ago, hour_ago))

    assert sweep_media_leftovers() == {"temporary_files_removed": 2, "temporary_bytes_removed": 5010,
                                       "pending_files_removed": 0}
    assert list(incoming.iterdir()) == [fresh]


def test_the_sweep_is_a_named_periodic_task():
    from cletir_site.celery import app

    assert sweep_media_leftovers.name in app.tasks
    schedule = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert schedule["assets.tasks.sweep_media_leftovers"]["schedule"] == 600.0
