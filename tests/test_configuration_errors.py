"""Bad configuration gets one clear message, not a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "cletir_site.settings", **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_unreachable_database_url():
    port = _free_port()
    url = f"postgres://cletir@127.0.0.1:{port}/cletir"
    for command in (["check_services"], ["migrate", "--noinput"]):
        result = manage(*command, DATABASE_URL=url)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert f"127.0.0.1:{port}/cletir" in result.stderr
        assert "Connection refused" in result.stderr


def test_broker_down():
    port = _free_port()
    result = manage("check_services", CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"broker redis://127.0.0.1:{port}/0 is unreachable" in result.stderr


def test_database_without_pgvector():
    """The machine's system Postgres 15 has no pgvector; it stands in for such a server."""
    try:
        socket.create_connection(("127.0.0.1", 5432), 1).close()
    except OSError:
        pytest.skip("no Postgres without pgvector on 127.0.0.1:5432 to point at")
    import psycopg

    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3) as conn:
            has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name='vector'").fetchone()
    except psycopg.Error as exc:
        pytest.skip(f"the Postgres on 127.0.0.1:5432 does not accept us: {exc}")
    if has_vector:
        pytest.skip("the Postgres on 127.0.0.1:5432 has pgvector")
    result = manage("check_services", DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "the server has no pgvector extension" in result.stderr
    assert "install pgvector >= 0.8" in result.stderr


def test_missing_secret_key_outside_debug():
    result = manage("check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_fresh_embedded_database_passes_the_check_before_its_first_migration(tmp_path):
    from cletir_site import embedded_postgres

    pgdata = tmp_path / "pg"
    try:
        result = manage("check_services", CLETIR_PGDATA=str(pgdata), DATABASE_URL="")
    finally:
        embedded_postgres.stop(pgdata)
    assert result.returncode == 0, result.stderr
    assert "pgvector 0.8" in result.stdout and "(available)" in result.stdout
