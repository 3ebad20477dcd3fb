"""/healthz reports each part and answers 503 when one is down."""
from __future__ import annotations

import pytest
from django.db import OperationalError

from cletir_site import health
from retrieval.workers import record_heartbeat

pytestmark = pytest.mark.django_db


def test_all_up_is_200_with_versions(client):
    record_heartbeat("w1@host", ["default", "embed", "search"], 123)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok" and body["broker"] == "ok"
    assert body["pgvector"].startswith("0.8") or tuple(map(int, body["pgvector"].split(".")[:2])) >= (0, 8)
    assert [w["hostname"] for w in body["workers"]] == ["w1@host"]


def test_no_worker_seen_is_503(client):
    body = client.get("/healthz")
    assert body.status_code == 503
    assert body.json()["workers"] == [] and body.json()["status"] == "down"


def test_stale_heartbeat_is_not_a_worker(client, settings):
    from datetime import timedelta

    from django.utils import timezone

    from retrieval.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(hostname="old@host", queues=["default"], pid=1,
                                   last_seen=timezone.now() - timedelta(seconds=3 * settings.CLETIR_WORKER_HEARTBEAT_SECONDS))
    assert client.get("/healthz").json()["workers"] == []


def test_broker_down_is_503(client, monkeypatch):
    from cletir_site.celery import app

    record_heartbeat("w1@host", ["default"], 123)
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] == "down"
    assert "127.0.0.1:1" in response.json()["broker_error"]


def test_database_down_is_503(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr(health.connection, "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "down" and body["pgvector"] is None
    assert body["database_error"] == "connection to server failed: Connection refused"


def test_each_worker_process_s_ranking_backend_is_shown_and_gone_processes_are_dropped(client):
    """A search worker's pool processes report their ranking backend and in-memory copies on the
    worker's heartbeat row; /healthz shows them; a process that is gone drops out at the next beat."""
    import os
    import subprocess
    import sys

    from retrieval.models import WorkerHeartbeat

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = {"backends": {"3": {"backend": "memory", "reason": "auto: cpu"}},
            "copies": {"3": {"photos": 1200, "bytes": 2_300_000, "mb": 2.2, "device": "cpu", "dtype": "float16",
                             "loaded_at": 1, "load_seconds": 0.1}}}
    record_heartbeat("w1@host", ["search"], 123)
    WorkerHeartbeat.objects.filter(hostname="w1@host").update(
        ranking={str(os.getpid()): live, str(gone.pid): {"backends": {}, "copies": {}}})
    record_heartbeat("w1@host", ["search"], 123)
    assert client.get("/healthz").json()["workers"][0]["ranking"] == {str(os.getpid()): live}


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_gives_up_on_a_locked_row_instead_of_stalling_the_worker():
    """The beat runs in the loop that takes tasks off the broker: a row held by another session
    (a pool process's report in a long transaction) must cost one failed beat, not the worker."""
    import time

    import psycopg
    from django.db import connection

    from retrieval.models import WorkerHeartbeat

    record_heartbeat("w1@host", ["search"], 123)
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"] or None, user=db["USER"], password=db["PASSWORD"] or None,
                         dbname=db["NAME"]) as other:
        other.execute(f'SELECT 1 FROM "{WorkerHeartbeat._meta.db_table}" WHERE hostname = %s FOR UPDATE', ["w1@host"])
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            record_heartbeat("w1@host", ["search"], 123)
        assert time.monotonic() - started < 4
    record_heartbeat("w1@host", ["search"], 123)  # the lock gone, the next beat goes through
    assert WorkerHeartbeat.objects.filter(hostname="w1@host").exists()
