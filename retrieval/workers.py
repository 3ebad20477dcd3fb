"""Worker heartbeats: which Celery workers are alive, independent of the broker in use."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import WorkerHeartbeat


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
