"""Worker heartbeats: which Celery workers are alive, independent of the broker in use."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .indexing.spaces import active_space, encoders_for, serving_space
from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)


def record_heartbeat(hostname: str, queues: list[str], pid: int) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"queues": list(queues), "pid": pid, "last_seen": timezone.now()}
    )


def forget_worker(hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()


def workers_seen() -> list[dict]:
    """Workers whose heartbeat is younger than twice the heartbeat interval."""
    cutoff = timezone.now() - timedelta(seconds=2 * settings.CLETIR_WORKER_HEARTBEAT_SECONDS)
    return [
        {"hostname": w.hostname, "queues": w.queues, "last_seen": w.last_seen.isoformat()}
        for w in WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).order_by("hostname")
    ]


def preload_models(queues: set[str]) -> None:
    """Load and warm up the models a worker process will need, before its first task.

    A search worker (queue `search`) needs the serving space's encoders and the generator; an
    embedding worker (`embed`) the active space's encoders. Without this, the first search of
    a fresh worker pays seconds of loading and one-time kernel set-up (bench/engine_speed.py).
    Nothing to preload (no space yet, weights missing) is not an error here: the task itself
    reports it when it runs.
    """
    try:
        if "search" in queues and (space := serving_space()) is not None:
            # Imported where used: torch and diffusers, which only a search worker needs.
            from retrieval.engine.generator import load_generator

            encoders_for(space).warmup()
            load_generator(space.profile).warmup()
        if "embed" in queues and (space := active_space()) is not None:
            encoders_for(space).warmup()
    except Exception:
        logger.warning("models were not preloaded; the first task will load them", exc_info=True)
    finally:
        connection.close()  # do not carry a connection opened here into the task's lifetime
