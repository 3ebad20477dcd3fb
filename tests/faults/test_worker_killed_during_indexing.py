"""A worker SIGKILLed in the middle of the indexing pipeline: every photo ends indexed exactly
once, and no claim is left behind.

The killed process holds claims on the batch in its encoders and on the batches prefetched
behind it, and has stored the batches before (retrieval.indexing.claims). Who takes them back:
* only the pool process dies: the worker hands the message back (acks_late +
  reject_on_worker_lost) and its new pool process runs the task again, which gives up the claims
  of its dead delivery at once and indexes those photos one by one;
* the whole worker dies: nobody hands it back (the filesystem broker has dropped it, Redis keeps
  it for its one-hour visibility timeout); the stale-work sweep queues indexing again, and the
  claims are taken once their lease has run out.
A photo that kills the process every time it is decoded is failed after a few deliveries
instead of being delivered forever.
"""
from __future__ import annotations

import pytest

from assets.models import Library
from retrieval.indexing.progress import pending_assets
from retrieval.indexing.claims import poison_error
from retrieval.models import AssetEmbedding, EmbeddingSpace, IndexingClaim, IndexingFailure
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import space_for_profile
from retrieval.sweeper import SweepReport, sweep_stale_work
from tests.conftest import wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER, kill_pool_process, kill_whole_worker
from tests.photos import write_photos

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 8
BATCH = 2  # four batches: the kill lands in the second, after the first has committed


@pytest.fixture
def photos(tiny_model_dir, media_root, make_user):
    library = Library.objects.create(name="Harbour", owner=make_user("ann"))
    return write_photos(media_root, library, PHOTOS)


def embeddings_per_asset(space) -> dict[int, int]:
    counts: dict[int, int] = {}
    for asset_id in AssetEmbedding.objects.filter(space=space).values_list("asset_id", flat=True):
        counts[asset_id] = counts.get(asset_id, 0) + 1
    return counts


def start_indexing(start_worker, paused_env, env: dict | None = None):
    worker = start_worker(broker=BROKER, queues="embed", module=PAUSED_WORKER,
                          env={**paused_env, "CLETIR_INDEX_BATCH_SIZE": str(BATCH), "CLETIR_INDEX_PREFETCH": "2",
                               **(env or {})})
    space = space_for_profile("tiny")
    activate_space(space)  # queues the indexing task on commit, through the worker's broker
    return worker, space


def assert_indexed_exactly_once(space, photos, failed=()) -> None:
    wait_for(lambda: not pending_assets(space).exists(), timeout=90, message="every photo indexed")
    assert embeddings_per_asset(space) == {a.pk: 1 for a in photos if a not in failed}
    assert set(IndexingFailure.objects.values_list("asset_id", flat=True)) == {a.pk for a in failed}
    wait_for(lambda: not IndexingClaim.objects.exists(), timeout=10, message="no claim left")
    space.refresh_from_db()
    assert space.is_serving and space.completed_at is not None


def claimed_but_not_stored(space) -> set[int]:
    return set(IndexingClaim.objects.filter(space=space).values_list("asset_id", flat=True))


def test_a_killed_pool_process_leaves_its_claims_and_its_next_delivery_takes_them_back(start_worker, paused_env, marks, photos):
    worker, space = start_indexing(start_worker, paused_env)

    victim = marks.wait("embed", 2)  # in the encoders with the second batch; two more prefetched behind it
    in_flight = claimed_but_not_stored(space)
    kill_pool_process(victim)

    assert len(embeddings_per_asset(space)) == BATCH  # the first batch only
    assert len(in_flight) > BATCH  # mid-pipeline: the second batch and at least one prefetched
    assert claimed_but_not_stored(space) == in_flight  # left behind, nothing else
    redone_by = marks.wait("embed", 3)  # the message came back: a new pool process runs the task
    marks.release()

    assert_indexed_exactly_once(space, photos)
    assert redone_by != victim
    assert f"pid:{victim} exited with 'signal 9 (SIGKILL)'" in worker.log()
    assert worker.process.poll() is None


def test_a_killed_worker_is_restarted_and_the_sweep_queues_what_it_left(
    start_worker, paused_env, marks, photos, settings
):
    worker, space = start_indexing(start_worker, paused_env)
    marks.wait("embed", 2)
    kill_whole_worker(worker)
    marks.release()
    assert len(embeddings_per_asset(space)) == BATCH
    assert EmbeddingSpace.objects.get(pk=space.pk).indexing_queued_at is None  # the task had started

    assert len(claimed_but_not_stored(space)) > BATCH

    # The test cannot wait the real quiet time and lease: the new worker lets claims lapse in 1 s.
    start_worker(broker=BROKER, queues="embed",
                 env={"CLETIR_INDEX_BATCH_SIZE": str(BATCH), "CLETIR_INDEX_CLAIM_SECONDS": "1"})
    settings.CLETIR_PHOTO_WORK_STALE_SECONDS = 0
    assert sweep_stale_work() == SweepReport(indexing_scheduled=1)

    assert_indexed_exactly_once(space, photos)
    assert sweep_stale_work() == SweepReport()


def test_a_photo_that_kills_its_worker_every_time_is_failed_after_a_few_deliveries(
    start_worker, paused_env, marks, photos
):
    poison = photos[3]  # in the second batch
    worker, space = start_indexing(start_worker, paused_env, env={
        "FAULT_POISON_FILE": poison.file.name, "CLETIR_INDEX_MAX_ATTEMPTS": "3", "FAULT_PAUSE_SECONDS": "0"})
    marks.release()  # no pauses: the poison photo is what kills the pool process

    assert_indexed_exactly_once(space, photos, failed=[poison])
    failure = IndexingFailure.objects.get(space=space)
    assert failure.error == poison_error(3)
    killed = marks.of("poison")
    assert len(killed) == 3 and len({pid for _, pid in killed}) == 3  # three deliveries, three processes
    assert worker.log().count("exited with 'signal 9 (SIGKILL)'") == 3
    assert worker.process.poll() is None
