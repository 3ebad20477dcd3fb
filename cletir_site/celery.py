"""The Celery app: three queues, routes, and the worker heartbeat that /healthz reads.

Queues (ARCHITECTURE.md): `search` (GPU, latency-sensitive), `embed` (GPU, bulk photo
embedding) and `default` (CPU: thumbnails, metadata, archives). A search never waits behind a
bulk job because they are different queues, consumed by different worker processes in
production.
"""
from __future__ import annotations

import os
import threading

from celery import Celery, bootsteps, signals
from kombu import Queue

from cletir_site.embedded_postgres import start_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")

app = Celery("cletir")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("search", "embed", "default")
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.conf.task_default_queue = "default"
app.conf.task_routes = {
    "retrieval.tasks.search.*": {"queue": "search"},
    "retrieval.tasks.embed.*": {"queue": "embed"},
}
# GPU work: one task at a time per process, acknowledged only when done, so a task whose
# worker dies is delivered again instead of being lost (tasks are idempotent by state checks).
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True
app.conf.broker_connection_retry_on_startup = True
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]
# Each app's `tasks` module, and those of retrieval's wings (explicit: autodiscovery looks one
# level deep only).
app.autodiscover_tasks()
app.autodiscover_tasks(["retrieval.indexing", "retrieval.search", "retrieval.albums"])
# `celery -A cletir_site beat` sends the stale-work sweep (retrieval.sweeper) on a timer. The
# interval is read from the environment here, not from Django settings, which are not loaded yet
# when this module is imported. A sweep that no worker took before the next one was due is
# dropped (expires): both would do the same thing.
SWEEP_INTERVAL_SECONDS = float(os.environ.get("CLETIR_SWEEP_INTERVAL_SECONDS", "60"))
# The media sweep (assets.media.sweep_leftovers) removes what killed uploads and deletes left,
# once it is older than CLETIR_MEDIA_GRACE_SECONDS: no hurry, every 10 minutes by default.
MEDIA_SWEEP_INTERVAL_SECONDS = float(os.environ.get("CLETIR_MEDIA_SWEEP_INTERVAL_SECONDS", "600"))
app.conf.beat_schedule = {
    "sweep-stale-work": {
        "task": "retrieval.tasks.maintenance.sweep_stale_work",
        "schedule": SWEEP_INTERVAL_SECONDS,
        "options": {"expires": SWEEP_INTERVAL_SECONDS},
    },
    "sweep-media-leftovers": {
        "task": "assets.tasks.sweep_media_leftovers",
        "schedule": MEDIA_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": MEDIA_SWEEP_INTERVAL_SECONDS},
    },
}


class HeartbeatStep(bootsteps.StartStopStep):
    """Records the worker in the database every few seconds, whatever the broker.

    Celery's own remote control (`inspect ping`) needs a broadcast-capable broker, which the
    filesystem transport is not; a heartbeat row works with every broker and also tells which
    queues a worker consumes.
    """

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        # A beat in flight must not re-record the worker after stop() has signed it off.
        self.lock = threading.Lock()
        self.stopped = False

    def start(self, worker):
        from django.conf import settings

        from retrieval import workers

        workers.PROCESS_HOSTNAME = worker.hostname  # the solo pool ranks in this process
        self._beat(worker)
        self.tref = worker.timer.call_repeatedly(
            settings.CLETIR_WORKER_HEARTBEAT_SECONDS / 2, self._beat, (worker,), priority=10
        )

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
        from retrieval.workers import forget_worker

        with self.lock:
            self.stopped = True
            try:
                forget_worker(worker.hostname)
            except Exception:  # the database may be the thing that is going away
                import logging

                logging.getLogger(__name__).warning("could not sign the worker off", exc_info=True)

    def _beat(self, worker):
        from retrieval.workers import record_heartbeat

        queues = sorted(worker.app.amqp.queues.consume_from or QUEUES)
        with self.lock:
            if self.stopped:
                return
            try:
                record_heartbeat(worker.hostname, queues, os.getpid())
            except Exception:  # a database blip must not kill the worker; the next beat retries
                import logging

                logging.getLogger(__name__).warning("worker heartbeat failed", exc_info=True)


app.steps["worker"].add(HeartbeatStep)


def _preload_models(sender=None, **kwargs) -> None:
    from retrieval import workers

    workers.PROCESS_HOSTNAME = sender  # the worker's hostname: this process reports to its heartbeat
    # Each pool process loads its own models once (models are not shared across a fork).
    if os.environ.get("CLETIR_PRELOAD_MODELS", "1") == "0":
        return
    from retrieval.workers import preload_models

    preload_models(set(app.amqp.queues.consume_from or QUEUES))


@signals.worker_init.connect
def _start_embedded_database(**kwargs) -> None:
    # Without DATABASE_URL a worker needs the embedded Postgres from its first heartbeat on.
    # (Beat only sends messages and never connects to the database: it starts nothing.)
    start_configured()


@signals.worker_init.connect
def _install_preload(**kwargs) -> None:
    # Connected here, not at import, so that it runs after Celery's Django fixup has dropped
    # the database connection a pool process inherits from its parent: using that socket from
    # the child would break the parent's session.
    signals.worker_process_init.connect(_preload_models, weak=False, dispatch_uid="cletir.preload_models")
