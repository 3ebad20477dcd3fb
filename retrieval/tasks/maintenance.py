"""Platform tasks: round-trip checks between the web process and the workers."""
from __future__ import annotations

import os
import socket

from celery import shared_task


@shared_task(name="retrieval.tasks.maintenance.ping")
def ping(token: str) -> dict:
    """Echo a token with the identity of the process that ran it."""
    return {"token": token, "pid": os.getpid(), "host": socket.gethostname()}
