"""Platform tasks: round-trip checks between the web process and the workers, and the
periodic sweep of stale work. The tasks of each wing live in its own `tasks` module
(`retrieval.indexing.tasks`, `retrieval.search.tasks`, `retrieval.albums.tasks`)."""
from __future__ import annotations

import os
import socket

from celery import shared_task

from .sweeper import sweep_stale_work as sweep


@shared_task(name="retrieval.tasks.maintenance.ping")
def ping(token: str) -> dict:
    """Echo a token with the identity of the process that ran it."""
    return {"token": token, "pid": os.getpid(), "host": socket.gethostname()}


@shared_task(name="retrieval.tasks.maintenance.sweep_stale_work")
def sweep_stale_work() -> dict:
    """The periodic stale-work sweep (`celery beat`, see cletir_site.celery); returns its counts."""
    return sweep().as_dict()
