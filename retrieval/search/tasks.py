"""`search` queue: running one search (GPU, latency-sensitive), and the one place that queues it.

The task's name is explicit and kept from the layout before `retrieval/search/` existed
(`retrieval.tasks.search.run_search`), so messages queued before an upgrade still run, and the
name routes the task to the `search` queue (cletir_site.celery).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from ..models import Search
from .proxies import write_proxy_images

logger = logging.getLogger(__name__)

# Errors worth retrying the whole task for: the database went away for a moment (a restart, a
# failover, a dropped connection); anything else would fail the same way again and is reported
# to the user at once.
TRANSIENT_ERRORS = (OperationalError,)
# Backoff between tries while the database is away: 1, 2, 4, ... seconds, at most this.
RETRY_BACKOFF_MAX_SECONDS = 30


@shared_task(name="retrieval.tasks.search.run_search", bind=True, acks_late=True, max_retries=None)
def run_search(self, search_id: int, outage_since: float | None = None) -> dict:
    """Run a search to the end (`retrieval.search.runner.execute`). Idempotent: a search
    already done (or failed) returns at once, a half-done one starts over. On any error the search is
    marked FAILED with a readable reason, so it is never left "running".

    A database outage anywhere in the run (reading the search included) retries the whole run,
    with backoff, for up to CLETIR_SEARCH_STALE_SECONDS from the outage's start
    (`outage_since`); then, once the database answers again, the search fails with that reason.
    When it ends, the user's next waiting search is sent to the queue."""
    # The runner is imported here, in the worker, not with this module: the web process imports
    # this module to queue searches, and the runner pulls in torch and the models' libraries.
    from .runner import RUN_QUERYSET, SearchFailed, execute

    try:
        with _commits_without_flush():
            search = RUN_QUERYSET.filter(pk=search_id).first()
            if search is None:
                return {"search": search_id, "status": "deleted"}
            if search.status != Search.Status.FAILED:
                # A FAILED search is final: the user retries with a new search. A message delivered
                # again after the sweeper failed the search (its worker died) must not bring it back
                # to "running"; and a search that kills its worker every time stops being delivered.
                if outage_since is not None and time.time() - outage_since >= _outage_limit():
                    search.mark_failed(f"The database was unavailable for {time.time() - outage_since:.0f} s "
                                       "while this search ran; try again.")
                else:
                    _execute(search, execute, SearchFailed)
        dispatch_waiting(search.user_id)
        return {"search": search_id, "status": Search.objects.filter(pk=search_id).values_list("status", flat=True).first()}
    except TRANSIENT_ERRORS as exc:
        since = outage_since or time.time()
        exhausted = time.time() - since >= _outage_limit() or self.request.retries >= _outage_tries()
        if self.request.called_directly or exhausted:
            # Nothing to retry with (called as a plain function), or the outage outlasted the
            # limit: fail with the reason, if the database answers now (else try again later).
            try:
                Search.objects.filter(pk=search_id).fail(f"The database was unavailable: {type(exc).__name__}: {exc}")
                return {"search": search_id, "status": Search.Status.FAILED}
            except TRANSIENT_ERRORS:
                if self.request.called_directly or self.request.retries >= 2 * _outage_tries():
                    raise
        logger.warning("search %s: the database is unavailable (%s); trying again", search_id, exc)
        countdown = min(RETRY_BACKOFF_MAX_SECONDS, 2 ** self.request.retries)
        raise self.retry(exc=exc, countdown=countdown, kwargs={"search_id": search_id, "outage_since": since})


@contextmanager
def _commits_without_flush():
    """While a search runs, its connection commits without waiting for the disk. What a search
    writes is derived and short-lived (its state, its results, its proxies' cache rows): a
    database crash loses at most the last fraction of a second of it, which the stale-work sweep
    turns into a failed search with its reason; meanwhile every write of the run saves a disk
    flush (~1.5-10 ms on a busy machine, bench/search.py). Reset afterwards: a kept connection's
    next task (indexing, on a worker serving both queues) commits as usual."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")
        except TRANSIENT_ERRORS:
            pass  # the connection is broken: it is closed and replaced, setting and all


def _execute(search: Search, execute, failed_error) -> None:
    try:
        execute(search, fresh=True)
    except failed_error as exc:
        search.mark_failed(str(exc))
        logger.warning("search %s failed: %s", search.pk, exc)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # a bug: still never leave the search "running"
        search.mark_failed(f"Unexpected error: {type(exc).__name__}: {exc}")
        logger.exception("search %s failed", search.pk)
    finally:
        write_proxy_images()  # images generated by a run that stopped before it wrote them


def _outage_limit() -> float:
    """How long a run tries through an outage: ends before the sweeper would call the search
    stale (CLETIR_SEARCH_STALE_SECONDS), so the reason the user reads is the true one."""
    return max(0.0, settings.CLETIR_SEARCH_STALE_SECONDS - 2.0 * RETRY_BACKOFF_MAX_SECONDS)


def _outage_tries() -> int:
    """Tries that cover the outage limit at the backoff's pace (the retries run at once when a
    task is applied eagerly, so time alone would not end them)."""
    return int(_outage_limit() // RETRY_BACKOFF_MAX_SECONDS) + 8


def queue_search(search: Search) -> None:
    """Hand the search to the `search` queue, unless its user has CLETIR_SEARCHES_IN_FLIGHT_PER_USER
    searches there already: then it waits (still `queued`) until one of them ends."""
    dispatch_waiting(search.user_id)


def dispatch_waiting(user_id: int) -> int:
    """Send the user's oldest waiting searches to the `search` queue while fewer than
    CLETIR_SEARCHES_IN_FLIGHT_PER_USER of theirs are in it (0: no limit); returns how many.

    Why per user: the queue is first in, first out, so sixty searches from one user would hold
    another user's single search behind all sixty. With a few per user in the queue, anyone waits
    for at most a few searches of each other user. Called when a search is created, when one
    ends (the task), and by the sweeper (a worker that died before it could call it)."""
    limit = settings.CLETIR_SEARCHES_IN_FLIGHT_PER_USER
    now = timezone.now()
    waiting = Search.objects.filter(user_id=user_id, status=Search.Status.QUEUED, dispatched_at__isnull=True)
    if not waiting.exists():
        return 0  # the usual case when a search ends; one made meanwhile dispatches itself
    with transaction.atomic():
        # The user's row lock: two requests of one user at once must not both see room for one more.
        list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))
        if limit > 0:
            in_flight = Search.objects.unfinished().filter(user_id=user_id, dispatched_at__isnull=False).count()
            waiting = waiting.order_by("created_at", "pk")[:max(0, limit - in_flight)]
        ids = list(waiting.values_list("pk", flat=True))
        Search.objects.filter(pk__in=ids).update(dispatched_at=now)
    for search_id in ids:
        send(search_id)
    return len(ids)


def send(search_id: int) -> None:
    """Put the search's message on the `search` queue; with the broker down the search fails
    with the reason instead of waiting forever."""
    try:
        run_search.delay(search_id)
    except Exception as exc:
        logger.exception("could not queue search %s", search_id)
        Search.objects.filter(pk=search_id).fail(f"The search could not be queued (is the broker running?): {exc}")
