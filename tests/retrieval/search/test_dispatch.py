"""Fair dispatch (a few searches per user in the queue at once) and runs that outlast a
database outage."""
from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from retrieval import sweeper
from retrieval.models import Search
from retrieval.search import runner as search_runner
from retrieval.search import tasks as search_tasks
from retrieval.search.tasks import run_search

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch, settings):
    settings.CLETIR_SEARCHES_IN_FLIGHT_PER_USER = 2
    record: list[int] = []
    monkeypatch.setattr(run_search, "delay", lambda pk: record.append(pk))
    return record


def post(user, text: str, django_capture_on_commit_callbacks) -> int:
    client = APIClient()
    client.force_authenticate(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/searches/", {"text": text, "text_only": True}, format="json")
    assert response.status_code == 202
    return response.json()["id"]


def finish(search_id: int, monkeypatch) -> None:
    """A worker runs the search (its ranking stubbed out: the dispatch is what is tested)."""
    monkeypatch.setattr(search_runner, "execute", lambda search, **kw: Search.objects.filter(pk=search.pk).update(
        status=Search.Status.DONE))
    run_search(search_id)


def test_one_users_many_searches_never_hold_another_users_search_behind_them(
        ann, make_user, sent, monkeypatch, django_capture_on_commit_callbacks):
    heavy = [post(ann, f"category {i}", django_capture_on_commit_callbacks) for i in range(6)]
    assert sent == heavy[:2]  # two of Ann's in the queue, four waiting
    waiting = APIClient()
    waiting.force_authenticate(ann)
    body = waiting.get(f"/api/searches/{heavy[2]}/").json()
    assert (body["status"], body["waiting"]) == ("queued", True)

    bob_search = post(make_user("bob"), "lighthouse", django_capture_on_commit_callbacks)
    assert sent == [*heavy[:2], bob_search]  # Bob's goes at once, behind two of Ann's only

    finish(heavy[0], monkeypatch)
    assert sent == [*heavy[:2], bob_search, heavy[2]]  # one of Ann's ended: her next one goes
    finish(heavy[1], monkeypatch)
    finish(heavy[2], monkeypatch)
    assert sent[-2:] == heavy[3:5]


def test_the_sweep_sends_waiting_searches_a_dead_run_could_not_release(ann, sent, django_capture_on_commit_callbacks):
    ids = [post(ann, f"category {i}", django_capture_on_commit_callbacks) for i in range(3)]
    # The worker running the first two died; the sweeper fails them (stale) and sends the third.
    Search.objects.filter(pk__in=ids[:2]).update(status=Search.Status.GENERATING)
    Search.objects.filter(pk__in=ids[:2]).fail("The worker stopped while running this search; try again.")
    assert sweeper.sweep_waiting_searches() == 1 and sent == ids
    assert Search.objects.get(pk=ids[2]).dispatched_at is not None


def test_a_run_started_while_the_database_is_away_is_tried_again_until_it_is_back(ann, sent, monkeypatch):
    """The first query of the task (reading the search) fails too: the whole run is retried."""
    search = Search.objects.create(user=ann, text="sailboat", k=4, text_only=True)
    failures = {"left": 3}

    def database_away(execute, sql, params, many, context):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("could not connect to server: Connection refused")
        return execute(sql, params, many, context)

    monkeypatch.setattr(search_runner, "execute", lambda s, **kw: Search.objects.filter(pk=s.pk).update(
        status=Search.Status.DONE))
    with connection.execute_wrapper(database_away):
        result = run_search.apply(args=[search.pk])
    assert result.get() == {"search": search.pk, "status": "done"} and failures["left"] == 0


def test_a_run_whose_outage_outlasted_the_limit_fails_with_that_reason(ann, sent, settings):
    settings.CLETIR_SEARCH_STALE_SECONDS = 600
    search = Search.objects.create(user=ann, text="sailboat", k=4, text_only=True)
    import time

    run_search.apply(kwargs={"search_id": search.pk, "outage_since": time.time() - 700})
    search.refresh_from_db()
    assert search.status == "failed"
    assert search.error.startswith("The database was unavailable for 70") and search.error.endswith("try again.")
    assert search_tasks._outage_limit() == 600 - 2 * search_tasks.RETRY_BACKOFF_MAX_SECONDS
