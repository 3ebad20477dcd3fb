"""The embedded Postgres starts, is reused, survives concurrent starts and a killed run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from cletir_site import embedded_postgres

PROJECT_DIR = Path(__file__).resolve().parent.parent
START_SNIPPET = (
    "import json, sys; from cletir_site.embedded_postgres import ensure_running; "
    "print(json.dumps(ensure_running(sys.argv[1])))"
)


def _connect(db: dict) -> psycopg.Connection:
    return psycopg.connect(host=db["HOST"], port=db["PORT"] or None, user=db["USER"], dbname=db["NAME"], autocommit=True)


@pytest.fixture
def pgdata(tmp_path_factory):
    # A short path: Postgres' Unix socket path must fit in 107 bytes.
    path = Path(tmp_path_factory.mktemp("pg")) / "data"
    yield path
    embedded_postgres.stop(path)


def test_start_twice_and_from_several_processes_at_once(pgdata):
    procs = [
        subprocess.Popen([sys.executable, "-c", START_SNIPPET, str(pgdata)], cwd=PROJECT_DIR,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    # Nobody raced to create the database twice (psql prints such an error but exits 0).
    assert not any("ERROR" in err for _, err in outputs), outputs
    first = embedded_postgres.ensure_running(pgdata)
    second = embedded_postgres.ensure_running(pgdata)
    assert first == second
    with _connect(first) as conn:
        version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name='vector'").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, CASE WHEN unit = '8kB' THEN (setting::bigint * 8192 >> 20) || 'MB' "
            "WHEN unit = 'kB' THEN (setting::bigint >> 10) || 'MB' ELSE setting END "
            "FROM pg_settings WHERE name IN ('shared_buffers', 'maintenance_work_mem', 'jit')").fetchall())
    # The server runs with the project's settings from its first start (shared_buffers needs
    # the restart that the starting process does), not initdb's 128 MB of shared buffers.
    assert settings == embedded_postgres.server_settings()
    assert version >= 180000
    assert tuple(int(x) for x in available.split(".")[:2]) >= (0, 8)


def test_stale_lock_from_a_killed_server_does_not_block_the_next_start(pgdata):
    db = embedded_postgres.ensure_running(pgdata)
    postmaster_pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    os.kill(postmaster_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while embedded_postgres.is_running(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (pgdata / "postmaster.pid").exists()  # the stale lock is left behind

    # The next run is a new process, as after a killed `make demo`; this one must recover too.
    restart = subprocess.run([sys.executable, "-c", START_SNIPPET, str(pgdata)], cwd=PROJECT_DIR,
                             capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    db_again = embedded_postgres.ensure_running(pgdata)

    with _connect(db_again) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert int((pgdata / "postmaster.pid").read_text().splitlines()[0]) != postmaster_pid
    assert db_again["NAME"] == db["NAME"]


def test_stop_ends_the_server(pgdata):
    embedded_postgres.ensure_running(pgdata)
    assert embedded_postgres.is_running(pgdata)
    assert embedded_postgres.stop(pgdata) is True
    assert not embedded_postgres.is_running(pgdata)
    assert embedded_postgres.stop(pgdata) is False
