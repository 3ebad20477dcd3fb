"""`search` queue: running one search (GPU, latency-sensitive)."""
from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)

# A database blip (restart, failover, dropped connection) is worth a few retries; anything
# else would fail the same way again and is reported to the user at once.
MAX_RETRIES = 3
RETRY_DELAY_SECONDS = 2


@shared_task(name="retrieval.tasks.search.run_search", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def run_search(self, search_id: int) -> dict:
    """Run a search to the end (`retrieval.search_runner.execute`). Idempotent: a search
    already done (or failed) returns at once, a half-done one starts over. On any error the search is
    marked FAILED with a readable reason, so it is never left "running"."""
    from retrieval.models import Search
    from retrieval.search_runner import TRANSIENT_ERRORS, SearchFailed, execute, mark_failed

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
        mark_failed(search_id, str(exc))
        logger.warning("search %s failed: %s", search_id, exc)
    except TRANSIENT_ERRORS as exc:
        # Called as a plain function (not through a worker) there is nothing to retry with.
        # (Celery's Django fixup closes the broken connection after the task, so the retry opens
        # a fresh one.)
        if self.request.retries < MAX_RETRIES and not self.request.called_directly:
            raise self.retry(exc=exc, countdown=RETRY_DELAY_SECONDS * (self.request.retries + 1))
        mark_failed(search_id, f"The database was unavailable: {type(exc).__name__}: {exc}")
        logger.exception("search %s failed after %d retries", search_id, MAX_RETRIES)
    except Exception as exc:  # a bug: still never leave the search "running"
        mark_failed(search_id, f"Unexpected error: {type(exc).__name__}: {exc}")
        logger.exception("search %s failed", search_id)
    status = Search.objects.filter(pk=search_id).values_list("status", flat=True).first()
    return {"search": search_id, "status": status}
