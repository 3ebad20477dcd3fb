"""The database restarted while a worker indexes: the worker recovers by itself and every photo
ends indexed exactly once.

The server that is restarted is a throw-away embedded Postgres of this test alone (the test
run's own server is shared by every other test and must not be stopped). The worker's batch in
flight fails with OperationalError and rolls back; the task retries that error with a backoff
(retrieval.tasks.embed), and Django's health checks give the retry a fresh connection.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from cletir_site import embedded_postgres
from retrieval.indexing.tasks import index_space
from tests.conftest import PROJECT_DIR, database_url_for, wait_for
from tests.faults.conftest import BROKER, PAUSED_WORKER

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTOS = 8
BATCH = 2
DOWN_SECONDS = 3  # longer than the first retry's delay (2 s): the worker meets a dead server


@pytest.fixture
def throwaway_database(media_root, tiny_model_dir):
    """A migrated embedded Postgres in its own data folder, with a library to index; stopped
    and removed at the end whatever happens. Yields (server settings, environment for processes
    on it)."""
    # Outside pytest's temporary folder: the server runs as another user when this runs as root,
    # and a concurrent pytest session closes that folder to other users again (mode 0700). Short,
    # too: the server's Unix socket path must fit in 107 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="cletir-pg-")) / "data"
    try:
        server = embedded_postgres.ensure_running(pgdata)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cletir_site.settings", "DJANGO_DEBUG": "1",
               "DATABASE_URL": database_url_for(server), "CLETIR_MEDIA_ROOT": str(media_root)}
        run_django(env, "manage.py", "migrate", "--noinput")
        yield server, env
    finally:
        if not embedded_postgres.stop(pgdata) and embedded_postgres.is_running(pgdata):
            os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)  # immediate
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def run_django(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def query(server: dict, sql: str) -> list[tuple]:
    with psycopg.connect(host=server["HOST"], port=server["PORT"] or None, user=server["USER"],
                         dbname=server["NAME"], autocommit=True) as conn:
        return conn.execute(sql).fetchall()


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
