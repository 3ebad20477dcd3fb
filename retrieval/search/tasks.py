"""`search` queue: running one search (GPU, latency-sensitive), and the one place that queues it.

The task's name is explicit and kept from the layout before `retrieval/search/` existed
(`retrieval.tasks.search.run_search`), so messages queued before an upgrade still run, and the
name routes the task to the `search` queue (cletir_site.celery).
"""
from __future__ import annotations

import logging

from celery import shared_task

from django.db import OperationalError

from ..models import Search

logger = logging.getLogger(__name__)

# Errors worth retrying the whole task for: the database went away for a moment (a restart, a
# failover, a dropped connection); anything else would fail the same way again and is reported
# to the user at once.
TRANSIENT_ERRORS = (OperationalError,)
MAX_RETRIES = 3
RETRY_DELAY_SECONDS = 2


@shared_task(name="retrieval.tasks.search.run_search", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def run_search(self, search_id: int) -> dict:
    """Run a search to the end (`retrieval.search.runner.execute`). Idempotent: a search
    already done (or failed) returns at once, a half-done one starts over. On any error the search is
    marked FAILED with a readable reason, so it is never left "running"."""
    # The runner is imported here, in the worker, not with this module: the web process imports
    # this module to queue searches, and the runner pulls in torch and the models' libraries.
    from .runner import SearchFailed, execute

    search = Search.objects.filter(pk=search_id).select_related("user").first()
    if search is None:
        return {"search": search_id, "status": "deleted"}
    if search.status == Search.Status.FAILED:
        # Final: the user retries with a new search. A message delivered again after the
        # sweeper failed the search (its worker died) must not bring it back to "running";
        # and a search that kills its worker every time stops being delivered here.
        return {"search": search_id, "status": search.status}
    try:
        execute(search)
    except SearchFailed as exc:
        search.mark_failed(str(exc))
        logger.warning("search %s failed: %s", search_id, exc)
    except TRANSIENT_ERRORS as exc:
        # Called as a plain function (not through a worker) there is nothing to retry with.
        # (Celery's Django fixup closes the broken connection after the task, so the retry opens
        # a fresh one.)
        if self.request.retries < MAX_RETRIES and not self.request.called_directly:
            raise self.retry(exc=exc, countdown=RETRY_DELAY_SECONDS * (self.request.retries + 1))
        search.mark_failed(f"The database was unavailable: {type(exc).__name__}: {exc}")
        logger.exception("search %s failed after %d retries", search_id, MAX_RETRIES)
    except Exception as exc:  # a bug: still never leave the search "running"
        search.mark_failed(f"Unexpected error: {type(exc).__name__}: {exc}")
        logger.exception("search %s failed", search_id)
    status = Search.objects.filter(pk=search_id).values_list("status", flat=True).first()
    return {"search": search_id, "status": status}


def queue_search(search: Search) -> None:
    """Send the search to the `search` queue; with the broker down the search fails with the
    reason instead of waiting forever."""
    try:
        run_search.delay(search.pk)
    except Exception as exc:
        logger.exception("could not queue search %s", search.pk)
        search.mark_failed(f"The search could not be queued (is the broker running?): {exc}")
