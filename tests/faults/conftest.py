"""Fault tests: real workers (tests.faults.paused_worker) killed at known points, a real broker
(Redis when it runs, else the filesystem broker), the real database. Each wait is bounded."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

import pytest

from cletir_site import embedded_postgres
from tests.conftest import PROJECT_DIR, WorkerProcess, database_url_for, redis_available, wait_for

BROKER = "redis" if redis_available() else "filesystem"
PAUSED_WORKER = "tests.faults.paused_worker"


class Marks:
    """The mark files a paused worker writes as it enters a paused call (see paused_worker)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def of(self, what: str) -> list[tuple[int, int]]:
        """(time, pid) of every `what` call entered so far, oldest first."""
        marks = [path.name.split("-") for path in self.folder.glob(f"{what}-*")]
        return sorted((int(stamp), int(pid)) for _, pid, stamp in marks)

    def release(self) -> None:
        """Let every paused call, now and later, go on at once."""
        (self.folder / "release").touch()

    def wait(self, what: str, count: int, timeout: float = 60) -> int:
        """Wait until the `count`-th `what` call has begun; returns the pid of the process in it."""
        wait_for(lambda: len(self.of(what)) >= count, timeout=timeout, message=f"{count} {what} calls")
        return self.of(what)[count - 1][1]


@pytest.fixture
def marks(tmp_path) -> Marks:
    folder = tmp_path / "marks"
    folder.mkdir()
    return Marks(folder)


@pytest.fixture
def paused_env(marks):
    """Environment of a paused worker: calls pause long enough to be killed inside them."""
    return {"FAULT_MARK_DIR": str(marks.folder), "FAULT_PAUSE_SECONDS": "2", "CLETIR_WORKER_HEARTBEAT_SECONDS": "2"}


def kill_pool_process(pid: int) -> None:
    """SIGKILL one pool process: its parent (the worker) sees WorkerLostError and replaces it."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), timeout=10, message=f"process {pid} to die")


def kill_whole_worker(worker: WorkerProcess) -> None:
    """SIGKILL the worker and its pool at once, as the OOM killer or a lost machine would: no
    one is left to hand the message back."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(10)


def _alive(pid: int) -> bool:
    try:
        # A killed child stays a zombie until its parent reaps it: that is dead too.
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
def server_env(media_root, tmp_path):
    """(environment, its TMPDIR) of a web process (tests.faults.web_server) on this test's database
    and media root. Thumbnails are made in the request (eager tasks); the system's temporary
    folder it sees is a folder of the test's own, so a test can tell what it left there."""
    from django.db import connection

    system_tmp = tmp_path / "system-tmp"  # the web process's TMPDIR: nothing may be left there
    system_tmp.mkdir()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cletir_site.settings", "DJANGO_DEBUG": "1",
           "DATABASE_URL": database_url_for(connection.settings_dict), "CLETIR_MEDIA_ROOT": str(media_root),
           "CELERY_TASK_ALWAYS_EAGER": "1", "TMPDIR": str(system_tmp), "DJANGO_LOG_LEVEL": "WARNING"}
    return env, system_tmp


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
