"""Claims and stores of the indexing pipeline (retrieval.indexing.claims): locks held only for
milliseconds, a store writes only what its lease still holds and what still exists, photos left
by a dead worker are taken back, and a photo that keeps killing its worker is failed."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from assets.models import Asset
from retrieval.indexing import claims
from retrieval.indexing.claims import Lease, Stored, poison_error
from retrieval.indexing.photos import index_pending_photos
from retrieval.indexing.spaces import space_for_profile
from retrieval.indexing.tasks import index_space
from retrieval.indexing.vector_index import index_name
from retrieval.models import AssetEmbedding, IndexingClaim, IndexingFailure
from tests.photos import write_photos


@pytest.fixture
def space(tiny_model_dir, db):
    return space_for_profile("tiny")


def vectors(space, count: int) -> np.ndarray:
    values = np.random.default_rng(count).standard_normal((count, space.dim)).astype(np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def stored_vectors(space) -> dict[int, np.ndarray]:
    return {a: np.asarray(v, dtype=np.float32) for a, v in AssetEmbedding.objects.filter(space=space).values_list("asset_id", "vector")}


def test_a_claim_commits_and_holds_no_row_lock_while_the_photos_are_worked_on(space, library, media_root):
    photos = write_photos(media_root, library, 3)

    claimed = claims.claim_fresh(space, Lease.new(), 2)

    assert [c.asset_id for c in claimed] == [photos[0].pk, photos[1].pk]
    assert claimed[0].path == photos[0].file.path and claimed[0].attempts == 1
    # Another session can lock the claimed photos at once (a delete would not wait for the work).
    with transaction.atomic():
        assert len(Asset.objects.select_for_update(nowait=True).filter(pk__in=[c.asset_id for c in claimed])) == 2
    # ... and they are not claimed twice: the next claim takes the third photo only.
    assert [c.asset_id for c in claims.claim_fresh(space, Lease.new(), 5)] == [photos[2].pk]
    assert claims.claim_fresh(space, Lease.new(), 5) == []


def test_a_store_writes_vectors_and_failures_in_one_binary_copy_and_ends_the_claims(space, library, media_root):
    photos = write_photos(media_root, library, 3)
    lease = Lease.new()
    claims.claim_fresh(space, lease, 3)
    planted = vectors(space, 2)

    stored = claims.store(space, lease, [photos[0].pk, photos[2].pk], planted, {photos[1].pk: "OSError: truncated"})

    assert stored == Stored(indexed=[photos[0].pk, photos[2].pk], failed=[photos[1].pk])
    got = stored_vectors(space)
    np.testing.assert_allclose(got[photos[0].pk], planted[0], atol=1e-3)  # halfvec: float16
    np.testing.assert_allclose(got[photos[2].pk], planted[1], atol=1e-3)
    assert IndexingFailure.objects.get(space=space).error == "OSError: truncated"
    assert not IndexingClaim.objects.exists()


def test_a_store_whose_lease_was_taken_over_writes_nothing(space, library, media_root):
    photos = write_photos(media_root, library, 2)
    slow = Lease.new()
    claims.claim_fresh(space, slow, 2)
    # The slow worker's lease ran out an hour ago.
    IndexingClaim.objects.filter(lease=slow.token).update(claimed_at=timezone.now() - timedelta(hours=1))
    other = Lease.new()
    suspect, _ = claims.claim_suspect(space, other)
    assert suspect.asset_id == photos[0].pk and suspect.attempts == 2

    stored = claims.store(space, slow, [p.pk for p in photos], vectors(space, 2), {})

    assert stored.indexed == [photos[1].pk]  # the photo it still held
    assert claims.store(space, other, [photos[0].pk], vectors(space, 1), {}).indexed == [photos[0].pk]
    assert sorted(stored_vectors(space)) == sorted(p.pk for p in photos)


def test_a_photo_deleted_before_the_store_leaves_no_vector_and_no_error(space, library, media_root):
    photos = write_photos(media_root, library, 2)
    lease = Lease.new()
    claims.claim_fresh(space, lease, 2)
    Asset.objects.filter(pk=photos[0].pk).delete()

    stored = claims.store(space, lease, [p.pk for p in photos], vectors(space, 2), {})

    assert stored.indexed == [photos[1].pk]
    assert list(stored_vectors(space)) == [photos[1].pk]
    assert not IndexingFailure.objects.exists() and not IndexingClaim.objects.exists()


def delete_locking_first(asset_ids: list[int], locked: threading.Event, go: threading.Event) -> None:
    """A photo delete as the library's delete path runs it: lock the rows (id order), then delete."""
    try:
        with transaction.atomic():
            list(Asset.objects.select_for_update(of=("self",)).filter(pk__in=asset_ids).order_by("pk").values_list("pk"))
            locked.set()
            go.wait(10)
            Asset.objects.filter(pk__in=asset_ids).delete()
    finally:
        connections.close_all()


def in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_a_store_waits_for_a_delete_that_holds_its_photo_and_never_brings_the_vector_back(
    tiny_model_dir, library, media_root
):
    space = space_for_profile("tiny")
    photos = write_photos(media_root, library, 3)
    lease = Lease.new()
    claims.claim_fresh(space, lease, 3)
    locked, go = threading.Event(), threading.Event()
    deleter = threading.Thread(target=delete_locking_first, args=([photos[0].pk, photos[2].pk], locked, go))
    deleter.start()
    assert locked.wait(10)

    store, outcome = in_thread(claims.store, space, lease, [p.pk for p in photos], vectors(space, 3), {})
    time.sleep(0.5)
    assert store.is_alive()  # waiting for the delete's row locks, not failing
    go.set()
    deleter.join(10)
    store.join(10)

    assert outcome == {"value": Stored(indexed=[photos[1].pk])}  # no error, no deadlock
    assert list(stored_vectors(space)) == [photos[1].pk]
    assert not IndexingClaim.objects.exists() and not IndexingFailure.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_delete_after_the_store_locked_its_photos_waits_and_removes_the_new_vectors(
    tiny_model_dir, library, media_root, monkeypatch
):
    space = space_for_profile("tiny")
    photos = write_photos(media_root, library, 2)
    lease = Lease.new()
    claims.claim_fresh(space, lease, 2)
    inside, go = threading.Event(), threading.Event()
    real = claims._insert_vectors

    def slow_insert(*args):  # the store holds its photos' locks here
        inside.set()
        go.wait(10)
        return real(*args)

    monkeypatch.setattr(claims, "_insert_vectors", slow_insert)
    store, outcome = in_thread(claims.store, space, lease, [p.pk for p in photos], vectors(space, 2), {})
    assert inside.wait(10)
    locked = threading.Event()
    deleter = threading.Thread(target=delete_locking_first, args=([photos[0].pk], locked, threading.Event()))
    deleter.start()
    time.sleep(0.5)
    assert not locked.is_set()  # the delete waits for the store
    go.set()
    store.join(10)
    deleter.join(20)

    assert outcome["value"].indexed == [photos[0].pk, photos[1].pk]
    assert not Asset.objects.filter(pk=photos[0].pk).exists()
    assert list(stored_vectors(space)) == [photos[1].pk]  # the deleted photo's vector went with it


def test_a_later_delivery_of_the_task_takes_back_its_dead_predecessors_claims(space, library, media_root):
    photos = write_photos(media_root, library, 3)
    dead = Lease.new("task-1")
    claims.claim_fresh(space, dead, 2)
    other_task = Lease.new("task-2")
    claims.claim_fresh(space, other_task, 1)
    assert claims.claim_suspect(space, Lease.new("task-1")) == (None, [])  # leases still running

    again = Lease.new("task-1")
    assert claims.take_back(space, again) == 2

    first, _ = claims.claim_suspect(space, again)
    second, _ = claims.claim_suspect(space, again, after=first.asset_id)
    assert (first.asset_id, second.asset_id) == (photos[0].pk, photos[1].pk)
    assert first.attempts == second.attempts == 2
    assert claims.claim_suspect(space, again, after=second.asset_id) == (None, [])  # task-2's claim is alive


def test_a_photo_claimed_by_dying_workers_too_often_is_failed_instead_of_claimed(space, library, media_root, settings):
    settings.CLETIR_INDEX_MAX_ATTEMPTS = 3
    photos = write_photos(media_root, library, 2)
    claims.claim_fresh(space, Lease.new("t"), 2)
    for delivery in (2, 3):  # each delivery takes the photos back, claims them alone, and dies
        lease = Lease.new("t")
        claims.take_back(space, lease)
        photo, poisoned = claims.claim_suspect(space, lease)
        assert (photo.asset_id, photo.attempts, poisoned) == (photos[0].pk, delivery, [])
    lease = Lease.new("t")
    claims.take_back(space, lease)

    photo, poisoned = claims.claim_suspect(space, lease)

    assert poisoned == [photos[0].pk]  # its fourth delivery: failed, not claimed
    assert IndexingFailure.objects.get(asset=photos[0]).error == poison_error(3)
    assert photo.asset_id == photos[1].pk and photo.attempts == 2  # the other one goes on, alone
    assert not IndexingClaim.objects.filter(asset=photos[0]).exists()


def test_a_run_stopped_by_an_error_gives_its_claims_back(space, library, media_root, monkeypatch):
    write_photos(media_root, library, 6)
    from retrieval.engine.encoders import load_encoders

    encoders = load_encoders("tiny")
    monkeypatch.setattr(claims, "store", lambda *args: (_ for _ in ()).throw(OperationalError("server closed the connection")))
    with pytest.raises(OperationalError):
        index_pending_photos(space, encoders, Lease.new(), batch_size=2, prefetch=2, threads=2,
                             deadline=time.monotonic() + 60)
    assert not IndexingClaim.objects.exists()


def test_a_pipelined_run_indexes_every_photo_once_and_stops_at_its_deadline(space, library, media_root):
    photos = write_photos(media_root, library, 9)
    from retrieval.engine.encoders import load_encoders

    encoders = load_encoders("tiny")
    short = index_pending_photos(space, encoders, Lease.new(), batch_size=2, prefetch=2, threads=2,
                                 deadline=time.monotonic())
    assert (short.indexed, short.failed, short.finished) == (2, 0, False)  # one batch, then the deadline

    run = index_pending_photos(space, encoders, Lease.new(), batch_size=2, prefetch=3, threads=2,
                               deadline=time.monotonic() + 60)

    assert (run.indexed, run.failed, run.finished) == (7, 0, True)
    assert sorted(stored_vectors(space)) == [p.pk for p in photos]
    assert run.clock.seconds.keys() >= {"take", "prepare_wait", "forward", "store", "read", "decode", "preprocess"}
    assert not IndexingClaim.objects.exists()


def test_the_vector_index_is_built_when_the_backfill_is_done(space, library, media_root, monkeypatch):
    monkeypatch.setattr(index_space, "delay", lambda space_id: None)
    write_photos(media_root, library, 3)
    space.is_active = True
    space.activated_at = timezone.now()
    space.save()

    def has_index() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [index_name(space)])
            return cursor.fetchone() is not None

    assert not has_index()  # a new space fills without maintaining a graph row by row
    assert index_space(space.pk) == {"space": space.pk, "indexed": 3, "failed": 0}
    assert has_index()
    space.refresh_from_db()
    assert space.is_serving
