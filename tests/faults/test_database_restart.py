"""The database restarted while a worker indexes: the worker recovers by itself and every photo
ends indexed exactly once.

The server that is restarted is a throw-away embedded Postgres of this test alone (the test
run's own server is shared by every other test and must not be stopped). The worker's batch in
flight fails with OperationalError and rolls back; the task retries that error with a backoff
(retrieval.tasks.embed), and Django's health checks give the retry a fresh connection.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cletir_site import embedded_postgres
from retrieval.indexing.tasks import index_space
from tests.conftest import wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER, query, run_django

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 8
BATCH = 2
DOWN_SECONDS = 3  # longer than the first retry's delay (2 s): the worker meets a dead server


def test_indexing_survives_a_database_restart_without_manual_steps(start_worker, throwaway_database, marks, paused_env):
    server, env = throwaway_database
    seeded = json.loads(run_django(
        env, "-c", f"import django; django.setup(); from tests.faults.seeding import seed_indexable_library; "
                   f"seed_indexable_library({PHOTOS})").strip().splitlines()[-1])
    worker = start_worker(broker=BROKER, queues="embed", module=PAUSED_WORKER,
                          env={**paused_env, "DATABASE_URL": env["DATABASE_URL"], "CLETIR_INDEX_BATCH_SIZE": str(BATCH)})
    task = index_space.delay(seeded["space"])

    marks.wait("embed", 2)  # a batch in flight: its transaction is open on the server
    pgdata = Path(server["HOST"])
    assert embedded_postgres.stop(pgdata)
    time.sleep(DOWN_SECONDS)
    marks.release()
    embedded_postgres.ensure_running(pgdata)

    def embeddings() -> dict[int, int]:
        return dict(query(server, "SELECT asset_id, count(*) FROM retrieval_assetembedding GROUP BY asset_id"))

    wait_for(lambda: len(embeddings()) == PHOTOS, timeout=60, message="every photo indexed after the restart")
    assert embeddings() == {asset_id: 1 for asset_id in seeded["assets"]}
    assert query(server, "SELECT count(*) FROM retrieval_indexingfailure") == [(0,)]
    assert query(server, f"SELECT completed_at IS NOT NULL FROM retrieval_embeddingspace WHERE id = {seeded['space']}") == [(True,)]
    # The run that met the restart died after its first batch; its automatic retry did the rest.
    assert task.get(timeout=30) == {"space": seeded["space"], "indexed": PHOTOS - BATCH, "failed": 0}
    assert worker.process.poll() is None, worker.log()  # the same worker: nobody restarted it
