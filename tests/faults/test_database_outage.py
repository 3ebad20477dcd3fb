"""The database goes away while a search runs, photos are indexed and thumbnails are made: once
it is back, every piece of work ends by itself, with no manual step and no sweep.

One real worker serves all three queues on a throw-away embedded Postgres of this test alone.
The search is paused inside its generation (so it is "generating" when the server stops), the
indexing batch inside its forward pass (its claim transaction open), and thumbnails are queued
behind them. The server is stopped for a short outage (6 s) and for a long one (120 s, slow), then
started again: the search retries its whole run (retrieval.search.tasks), indexing and
renditions retry with backoff (retrieval.indexing.tasks, assets.tasks), and within two minutes of
the restart the search is done, every photo has one vector and its thumbnails.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from assets.tasks import render_pending_photos
from cletir_site import embedded_postgres
from retrieval.indexing.tasks import index_space
from retrieval.search.tasks import run_search
from tests.conftest import wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER, query, run_django

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 6
QUERY = "sailboat"
AFTER_RESTART_SECONDS = 120  # the bound: everything ends within two minutes of the restart


@pytest.mark.parametrize("down_seconds", [6, 120])
def test_search_indexing_and_thumbnails_end_by_themselves_after_an_outage(
        start_worker, throwaway_database, marks, paused_env, down_seconds):
    server, env = throwaway_database
    seeded = json.loads(run_django(
        env, "-c", f"import django; django.setup(); from tests.faults.seeding import seed_outage_world; "
                   f"seed_outage_world({PHOTOS}, {QUERY!r})").strip().splitlines()[-1])
    worker = start_worker(broker=BROKER, queues="search,embed,default", module=PAUSED_WORKER,
                          env={**paused_env, "FAULT_PAUSE_QUERY": QUERY, "DATABASE_URL": env["DATABASE_URL"],
                               "CLETIR_INDEX_BATCH_SIZE": "2", "CLETIR_PRELOAD_MODELS": "0"})
    run_search.delay(seeded["search"])
    index_space.delay(seeded["space"])
    render_pending_photos.delay()

    marks.wait("generate", 1, timeout=120)  # the search is generating: its run is under way
    pgdata = Path(server["HOST"])
    assert embedded_postgres.stop(pgdata)
    marks.release()  # the paused calls go on, and meet the dead server
    time.sleep(down_seconds)
    embedded_postgres.ensure_running(pgdata)
    restarted = time.monotonic()

    def everything_done() -> bool:
        try:
            search = query(server, f"SELECT status, error FROM retrieval_search WHERE id = {seeded['search']}")[0]
            vectors = dict(query(server, "SELECT asset_id, count(*) FROM retrieval_assetembedding GROUP BY asset_id"))
            thumbs = query(server, "SELECT count(*) FROM assets_asset WHERE status = 'ready'")[0][0]
        except Exception:  # the server is still coming up
            return False
        return search[0] in ("done", "failed") and len(vectors) == PHOTOS and thumbs == PHOTOS

    wait_for(everything_done, timeout=AFTER_RESTART_SECONDS, interval=1,
             message=f"search, indexing and thumbnails to end after a {down_seconds} s outage")
    assert time.monotonic() - restarted < AFTER_RESTART_SECONDS
    status, error = query(server, f"SELECT status, error FROM retrieval_search WHERE id = {seeded['search']}")[0]
    assert (status, error) == ("done", ""), worker.log()[-3000:]
    assert dict(query(server, "SELECT asset_id, count(*) FROM retrieval_assetembedding GROUP BY asset_id")) == {
        asset_id: 1 for asset_id in seeded["assets"]}
    assert query(server, "SELECT count(*) FROM retrieval_indexingfailure") == [(0,)]
    assert query(server, "SELECT count(DISTINCT asset_id), count(*) FROM assets_rendition") == [(PHOTOS, 2 * PHOTOS)]
    assert worker.process.poll() is None, worker.log()  # the same worker: nobody restarted it
