"""The embedded Postgres starts, is reused, survives concurrent starts and a killed run; only the
processes that need it start it (not importing the settings, not `embedded_postgres status`)."""
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


def _manage(pgdata: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "cletir_site.settings",
           "CLETIR_PGDATA": str(pgdata), "DATABASE_URL": ""}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=120)


def test_settings_name_the_socket_without_starting_the_server(pgdata):
    snippet = ("import json, django; from django.conf import settings; django.setup(); "
               "print(json.dumps(settings.DATABASES['default']))")
    env = {**os.environ, "DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "cletir_site.settings",
           "CLETIR_PGDATA": str(pgdata), "DATABASE_URL": ""}
    result = subprocess.run([sys.executable, "-c", snippet], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    db = json.loads(result.stdout)
    assert (db["HOST"], db["PORT"], db["NAME"]) == (str(pgdata), "5432", "cletir")
    assert not pgdata.exists() and not embedded_postgres.is_running(pgdata)
    # The server a process starts later listens exactly there.
    embedded_postgres.start(pgdata)
    with _connect(db) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("cletir",)


def test_status_reports_and_never_starts_the_server(pgdata):
    result = _manage(pgdata, "embedded_postgres", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"embedded Postgres not created yet ({pgdata} will hold it)"
    assert not (pgdata / "PG_VERSION").exists() and not embedded_postgres.is_running(pgdata)

    assert embedded_postgres.start(pgdata) is True
    pid = embedded_postgres.status(pgdata).pid
    running = _manage(pgdata, "embedded_postgres", "status")
    assert running.stdout.strip() == f"embedded Postgres running in {pgdata} (pid {pid}, socket {pgdata})"

    assert embedded_postgres.stop(pgdata)
    stopped = _manage(pgdata, "embedded_postgres", "status")
    assert stopped.stdout.startswith(f"embedded Postgres not running (data in {pgdata})"), stopped.stdout
    assert not embedded_postgres.is_running(pgdata)


def test_a_command_that_needs_the_database_starts_it(pgdata):
    result = _manage(pgdata, "migrate", "--noinput", "--verbosity", "0")
    assert result.returncode == 0, result.stderr
    assert embedded_postgres.is_running(pgdata)
    assert embedded_postgres.start(pgdata) is False  # already running: attached, not started


def test_a_setting_postgres_refuses_stops_the_start_with_its_message(pgdata, monkeypatch):
    monkeypatch.setenv("CLETIR_PG_SHARED_BUFFERS", "lots")
    with pytest.raises(embedded_postgres.EmbeddedPostgresError) as refused:
        embedded_postgres.start(pgdata)
    assert 'invalid value for parameter "shared_buffers": "lots"' in str(refused.value)
    assert str(pgdata / "log") in str(refused.value)
    assert not embedded_postgres.is_running(pgdata)


def test_a_data_folder_too_deep_for_a_socket_path_gets_its_socket_in_tmp(tmp_path_factory):
    pgdata = Path(tmp_path_factory.mktemp("pg")) / ("d" * 60) / ("e" * 40) / "data"
    socket = embedded_postgres.socket_dir(pgdata)
    assert socket.parent == Path("/tmp") and len(str(socket / ".s.PGSQL.5432")) <= 103
    try:
        db = embedded_postgres.ensure_running(pgdata)
        assert db["HOST"] == str(socket)
        with _connect(db) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        embedded_postgres.stop(pgdata)


@pytest.mark.slow
def test_a_worker_starts_the_server_it_needs(pgdata, tmp_path):
    assert _manage(pgdata, "migrate", "--noinput", "--verbosity", "0").returncode == 0
    assert embedded_postgres.stop(pgdata)
    env = {**os.environ, "DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "cletir_site.settings",
           "CLETIR_PGDATA": str(pgdata), "DATABASE_URL": "", "CLETIR_PRELOAD_MODELS": "0",
           "CELERY_BROKER_URL": "filesystem://localhost//", "CLETIR_BROKER_DIR": str(tmp_path / "broker")}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "cletir_site", "worker", "--queues", "default",
                               "--concurrency", "1", "--hostname", f"pgtest-{os.getpid()}@%h"],
                              cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from tests.conftest import wait_for

        def heartbeats() -> int:
            if not embedded_postgres.is_running(pgdata):
                return 0
            with _connect(embedded_postgres.connection_settings(pgdata)) as conn:
                return conn.execute("SELECT count(*) FROM retrieval_workerheartbeat").fetchone()[0]

        wait_for(heartbeats, timeout=90, message="the worker's heartbeat on the server it started")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
