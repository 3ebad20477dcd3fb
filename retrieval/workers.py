"""Worker heartbeats: which Celery workers are alive, independent of the broker in use."""
from __future__ import annotations

import json
import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .indexing.spaces import active_space, encoders_for, serving_space
from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)


# The Celery worker this process belongs to (set when a pool process starts, or by the worker
# itself with the solo pool): the heartbeat row its ranking report goes to.
PROCESS_HOSTNAME: str | None = None


# The beat runs in the worker's event loop, which also takes messages off the broker: a beat
# that waited on a lock (a pool process's report in a transaction, a stuck session) would stop
# the worker from taking any task. It gives up instead, and the next beat tries again.
HEARTBEAT_LOCK_TIMEOUT = "2s"
HEARTBEAT_STATEMENT_TIMEOUT = "5s"


def record_heartbeat(hostname: str, queues: list[str], pid: int) -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{HEARTBEAT_LOCK_TIMEOUT}'")
            cursor.execute(f"SET LOCAL statement_timeout = '{HEARTBEAT_STATEMENT_TIMEOUT}'")
        heartbeat, created = WorkerHeartbeat.objects.update_or_create(
            hostname=hostname, defaults={"queues": list(queues), "pid": pid, "last_seen": timezone.now()}
        )
        # Reports of pool processes that are gone (a restart, max-tasks-per-child) are dropped.
        alive = {pid: report for pid, report in heartbeat.ranking.items() if _process_alive(int(pid))}
        if alive != heartbeat.ranking:
            WorkerHeartbeat.objects.filter(pk=heartbeat.pk).update(ranking=alive)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def report_ranking() -> None:
    """Write this process's ranking backends and in-memory copies to its worker's heartbeat
    (called when they change: a backend chosen, a copy loaded). A pool process may get there
    before its worker's first heartbeat: it then writes the row, which the next beat completes."""
    if PROCESS_HOSTNAME is None:
        return  # not a worker process (tests, the benchmark, the web)
    from .search.ranking import process_report

    report = json.dumps({str(os.getpid()): {**process_report(), "reported_at": timezone.now().isoformat()}})
    table = WorkerHeartbeat._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" AS h (hostname, queues, pid, started_at, last_seen, ranking) '
            "VALUES (%s, '[]'::jsonb, %s, now(), now(), %s::jsonb) "
            "ON CONFLICT (hostname) DO UPDATE SET ranking = h.ranking || EXCLUDED.ranking",
            [PROCESS_HOSTNAME, os.getpid(), report])


def forget_worker(hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()


def workers_seen() -> list[dict]:
    """Workers whose heartbeat is younger than twice the heartbeat interval."""
    cutoff = timezone.now() - timedelta(seconds=2 * settings.CLETIR_WORKER_HEARTBEAT_SECONDS)
    return [
        {"hostname": w.hostname, "queues": w.queues, "last_seen": w.last_seen.isoformat(), "ranking": w.ranking}
        for w in WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).order_by("hostname")
    ]


def preload_models(queues: set[str]) -> None:
    """Load and warm up the models a worker process will need, before its first task.

    A search worker (queue `search`) needs the serving space's encoders, the generator and its
    ranking backend (the memory backend's copy of the space's vectors); an embedding worker
    (`embed`) the active space's encoders. Without this, the first search of
    a fresh worker pays seconds of loading and one-time kernel set-up (bench/engine_speed.py).
    Nothing to preload (no space yet, weights missing) is not an error here: the task itself
    reports it when it runs.
    """
    try:
        if "search" in queues and (space := serving_space()) is not None:
            # Imported where used: torch and diffusers, which only a search worker needs.
            from retrieval.engine.generator import load_generator

            from retrieval.search.ranking import warm_up

            encoders_for(space).warmup()
            load_generator(space.profile).warmup()
            warm_up(space)
        if "embed" in queues and (space := active_space()) is not None:
            encoders_for(space).warmup()
    except Exception:
        logger.warning("models were not preloaded; the first task will load them", exc_info=True)
    finally:
        connection.close()  # do not carry a connection opened here into the task's lifetime
