"""A task sent from the web side is executed by a separate worker process (real broker)."""
from __future__ import annotations

import os
import time
import uuid

import pytest
from django.test import Client

from retrieval.tasks import ping
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("broker", ["filesystem", pytest.param("redis", marks=pytest.mark.redis)])
def test_task_runs_in_separate_worker_and_health_turns_ok(start_worker, broker, settings):
    settings.CLETIR_WORKER_HEARTBEAT_SECONDS = 2
    worker = start_worker(broker=broker)
    token = uuid.uuid4().hex

    result = ping.delay(token).get(timeout=90)

    assert result["token"] == token
    assert result["pid"] != os.getpid()
    # The worker's heartbeat makes /healthz report it, with the database and pgvector up.
    response = wait_for(
        lambda: (r := Client().get("/healthz")).status_code == 200 and r, timeout=30, message="healthz 200"
    )
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["broker"] == "ok"
    assert tuple(int(p) for p in body["pgvector"].split(".")[:2]) >= (0, 8)
    assert [w["queues"] for w in body["workers"]] == [["default", "embed", "search"]]
    worker.stop()
    # A stopped worker removes its heartbeat: health goes down until another one runs.
    assert Client().get("/healthz").status_code == 503, worker.log()


def test_filesystem_broker_hands_queued_tasks_over_without_waiting_a_second_each(start_worker):
    """With kombu's default polling (1 s) a worker waited about a second before each task (it
    polls while its one task runs): 20 queued pings took ~19 s. CLETIR_BROKER_POLL_SECONDS
    (0.05 s) takes them in about a second; the bound leaves room for a loaded machine."""
    start_worker(broker="filesystem", queues="default")
    ping.delay("started").get(timeout=90, interval=0.01)

    started = time.monotonic()
    results = [ping.delay(str(i)) for i in range(20)]
    tokens = [result.get(timeout=60, interval=0.01)["token"] for result in results]
    elapsed = time.monotonic() - started

    assert tokens == [str(i) for i in range(20)]
    assert elapsed < 10, f"20 queued pings took {elapsed:.1f}s"


def test_ping_task_is_routed_to_the_default_queue():
    from cletir_site.celery import app

    route = app.amqp.router.route({}, ping.name)
    assert route["queue"].name == "default"
    assert app.amqp.router.route({}, "retrieval.tasks.search.run_search")["queue"].name == "search"
    assert app.amqp.router.route({}, "retrieval.tasks.embed.embed_assets")["queue"].name == "embed"
