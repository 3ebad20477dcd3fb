"""A worker SIGKILLed in the middle of an indexing batch: every photo ends indexed exactly once.

The batch being embedded holds its photos with FOR UPDATE SKIP LOCKED and writes their vectors
in the same transaction, so a kill rolls it back and those photos are simply pending again. Who
runs them again differs:
* only the pool process dies: the worker hands the message back (acks_late +
  reject_on_worker_lost) and its new pool process runs the task again;
* the whole worker dies: nobody hands it back (the filesystem broker has dropped it, Redis keeps
  it for its one-hour visibility timeout); the stale-work sweep queues indexing again.
"""
from __future__ import annotations

import pytest

from assets.models import Library
from retrieval.indexing.progress import pending_assets
from retrieval.models import AssetEmbedding, EmbeddingSpace, IndexingFailure
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


def start_indexing(start_worker, paused_env):
    worker = start_worker(broker=BROKER, queues="embed", module=PAUSED_WORKER,
                          env={**paused_env, "CLETIR_INDEX_BATCH_SIZE": str(BATCH)})
    space = space_for_profile("tiny")
    activate_space(space)  # queues the indexing task on commit, through the worker's broker
    return worker, space


def assert_indexed_exactly_once(space, photos) -> None:
    wait_for(lambda: not pending_assets(space).exists(), timeout=60, message="every photo indexed")
    assert embeddings_per_asset(space) == {a.pk: 1 for a in photos}
    assert not IndexingFailure.objects.exists()
    space.refresh_from_db()
    assert space.is_serving and space.completed_at is not None


def test_a_killed_pool_process_rolls_its_batch_back_and_the_task_runs_again(start_worker, paused_env, marks, photos):
    worker, space = start_indexing(start_worker, paused_env)

    victim = marks.wait("embed", 2)  # inside the second batch: claimed, not committed
    kill_pool_process(victim)

    assert len(embeddings_per_asset(space)) == BATCH  # the first batch only; the second rolled back
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

    start_worker(broker=BROKER, queues="embed", env={"CLETIR_INDEX_BATCH_SIZE": str(BATCH)})
    settings.CLETIR_PHOTO_WORK_STALE_SECONDS = 0  # the test cannot wait the real quiet time
    assert sweep_stale_work() == SweepReport(indexing_scheduled=1)

    assert_indexed_exactly_once(space, photos)
    assert sweep_stale_work() == SweepReport()
