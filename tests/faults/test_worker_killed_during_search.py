"""A worker SIGKILLed in the middle of a search: the search is run again to the end, or fails
with a reason the user reads; it never stays "generating", and searching again works.

* only the pool process dies: the worker hands the message back (acks_late +
  reject_on_worker_lost) and the search is run again from the start (its partial state is
  discarded) to "done";
* the whole worker dies: nobody hands the message back in time, and the stale-work sweep marks
  the search failed; the same search made again completes.
"""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from assets.models import Library
from retrieval.models import Search
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import space_for_profile
from retrieval.sweeper import WORKER_DIED, SweepReport, sweep_stale_work
from retrieval.indexing.tasks import index_space
from tests.conftest import wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER, kill_pool_process, kill_whole_worker
from tests.photos import write_photos

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 6
QUERY = "sailboat"


@pytest.fixture
def ann(tiny_model_dir, media_root, make_user, monkeypatch):
    """A user with an indexed library (indexed here, in-process: the workers only search)."""
    user = make_user("ann")
    write_photos(media_root, Library.objects.create(name="Harbour", owner=user), PHOTOS)
    space = space_for_profile("tiny")
    with monkeypatch.context() as patch:
        patch.setattr(index_space, "delay", lambda space_id: None)
        activate_space(space)
    assert index_space(space.pk)["indexed"] == PHOTOS
    return user


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def search_for(user, text: str = QUERY) -> int:
    """Start a search through the API, as a program would; returns its id."""
    response = api(user).post("/api/searches/", {"text": text}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def finished(search_id: int) -> Search:
    return wait_for(lambda: (s := Search.objects.get(pk=search_id)).is_finished and s, timeout=60,
                    message=f"search {search_id} to finish")


def test_a_search_whose_pool_process_is_killed_is_run_again_to_the_end(start_worker, paused_env, marks, ann):
    worker = start_worker(broker=BROKER, queues="search", module=PAUSED_WORKER, env={**paused_env, "FAULT_PAUSE_QUERY": QUERY})
    search_id = search_for(ann)

    victim = marks.wait("generate", 1)
    running = Search.objects.get(pk=search_id)
    assert running.status == "generating" and running.started_at is not None
    kill_pool_process(victim)
    again = marks.wait("generate", 2)  # delivered again, to the worker's new pool process
    marks.release()

    search = finished(search_id)
    assert (search.status, search.error, search.result_count) == ("done", "", PHOTOS)
    assert search.results.count() == PHOTOS and search.proxy_set.images.count() == search.k
    assert again != victim and f"pid:{victim} exited with 'signal 9 (SIGKILL)'" in worker.log()


def test_a_search_whose_worker_is_killed_fails_with_the_reason_and_can_be_made_again(
    start_worker, paused_env, marks, ann, settings
):
    worker = start_worker(broker=BROKER, queues="search", module=PAUSED_WORKER, env={**paused_env, "FAULT_PAUSE_QUERY": QUERY})
    search_id = search_for(ann)
    marks.wait("generate", 1)
    kill_whole_worker(worker)
    marks.release()
    start_worker(broker=BROKER, queues="search")

    assert Search.objects.get(pk=search_id).status == "generating"  # nobody will finish it
    settings.CLETIR_SEARCH_STALE_SECONDS = 0  # the test cannot wait the real time limit
    assert sweep_stale_work() == SweepReport(searches_failed=1)
    shown = api(ann).get(f"/api/searches/{search_id}/").json()
    assert (shown["status"], shown["error"]) == ("failed", WORKER_DIED)

    settings.CLETIR_SEARCH_STALE_SECONDS = 600
    retry = finished(search_for(ann))
    assert (retry.status, retry.error, retry.result_count) == ("done", "", PHOTOS)
    assert Search.objects.get(pk=search_id).status == "failed"  # the dead one stays what it was
