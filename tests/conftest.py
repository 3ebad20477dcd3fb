"""Shared fixtures: users and libraries, and real Celery worker processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from cletir_site.broker import FILESYSTEM_URL, filesystem_options, filesystem_results, point_app_at

# Tests never reach the hub; huggingface_hub reads this once, at its first import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROJECT_DIR = Path(__file__).resolve().parent.parent
# A database of its own, flushed by the fixture; CLETIR_TEST_REDIS_URL gives two checkouts that
# test at once on one machine a database each.
REDIS_URL = os.environ.get("CLETIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def database_url_for(db_settings: dict) -> str:
    """A DATABASE_URL that points a subprocess at the database this test process uses."""
    host = quote(db_settings["HOST"], safe="") if db_settings["HOST"].startswith("/") else db_settings["HOST"]
    port = f":{db_settings['PORT']}" if db_settings.get("PORT") else ""
    password = f":{quote(db_settings['PASSWORD'])}" if db_settings.get("PASSWORD") else ""
    return f"postgres://{db_settings['USER']}{password}@{host}{port}/{db_settings['NAME']}"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """Start the embedded Postgres (when DATABASE_URL is unset) before pytest-django creates
    the test database: importing the settings only names its socket."""
    from cletir_site.embedded_postgres import start_configured

    start_configured()


def redis_available() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), 1).close()
    except OSError:
        return False
    return True


class WorkerProcess:
    """A real `celery worker` subprocess on the test database; stopped (or killed) at teardown."""

    def __init__(self, env: dict, queues: str, log_path: Path, module: str = "celery", broker: str = "filesystem"):
        self.broker = broker
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "-A", "cletir_site", "worker", "--queues", queues,
             "--concurrency", "1", "--pool", "prefork", "--loglevel", "INFO",
             "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path, monkeypatch):
    """Start real worker processes that share this test's database and a broker.

    `start_worker(broker="filesystem")` uses kombu's filesystem transport in a temporary folder
    (what `make demo` uses); `broker="redis"` the machine's Redis. The test process gets the
    same broker, so what it sends is executed by the worker, not in-process.
    """
    from django.db import connection

    from cletir_site.celery import app

    workers: list[WorkerProcess] = []
    saved_conf = tuple(app.conf[key] for key in ("broker_url", "result_backend", "broker_transport_options"))

    def start(broker: str = "filesystem", queues: str = "search,embed,default", env: dict | None = None,
              module: str = "celery") -> WorkerProcess:
        """`env` adds to (or overrides) the worker's environment; `module` is what `python -m`
        runs instead of celery (a wrapper that takes celery's arguments, see tests/faults)."""
        env = {**os.environ, "DATABASE_URL": database_url_for(connection.settings_dict), "DJANGO_DEBUG": "1",
               "CLETIR_WORKER_HEARTBEAT_SECONDS": str(settings.CLETIR_WORKER_HEARTBEAT_SECONDS),
               "CLETIR_MEDIA_ROOT": str(settings.MEDIA_ROOT), **(env or {})}
        if broker == "redis":
            if not redis_available():
                pytest.skip("no Redis server on 127.0.0.1:6379")
            import redis

            if not any(w.broker == "redis" for w in workers):
                # Once per test: a worker started later (a restart) must find what was queued.
                redis.Redis.from_url(REDIS_URL).flushdb()
            env.update(CELERY_BROKER_URL=REDIS_URL, CELERY_RESULT_BACKEND=REDIS_URL)
            conf = (REDIS_URL, REDIS_URL, {})
        else:
            broker_dir = tmp_path / "broker"
            env.update(CELERY_BROKER_URL=FILESYSTEM_URL, CLETIR_BROKER_DIR=str(broker_dir))
            conf = (FILESYSTEM_URL, filesystem_results(broker_dir),
                    filesystem_options(broker_dir, settings.CLETIR_BROKER_POLL_SECONDS))
        point_app_at(app, *conf)
        worker = WorkerProcess(env, queues, tmp_path / f"worker-{len(workers)}.log", module, broker)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    point_app_at(app, *saved_conf)


def wait_for(predicate, timeout: float = 60, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random-weight profile, built once per session into a temporary folder that
    CLETIR_MODEL_DIR points to (worker subprocesses inherit it)."""
    import torch

    from retrieval.engine.build_models import build_profile
    from retrieval.engine.model_folders import ENV_MODEL_DIR
    from retrieval.engine.runtime import ENV_OVERRIDES

    # Tiny models are thousands of microsecond ops: on a 2-core machine shared with other
    # processes, a second intra-op thread makes each op wait for a descheduled sibling and the
    # suite several times slower, while one thread loses nothing at this size.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cletir-models")
    build_profile("tiny", root)
    patch = pytest.MonkeyPatch()
    patch.setenv(ENV_MODEL_DIR, str(root))
    for var in [*ENV_OVERRIDES, "CLETIR_TORCH_THREADS"]:  # a site's overrides must not leak in
        patch.delenv(var, raising=False)
    yield root
    patch.undo()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_encoders(tiny_model_dir):
    """The tiny profile's encoders on CPU (loaded once)."""
    from retrieval.engine.encoders import load_encoders

    return load_encoders("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir):
    """The tiny profile's proxy generator on CPU (loaded once)."""
    from retrieval.engine.generator import load_generator

    return load_generator("tiny", device="cpu")


@pytest.fixture
def eager_tasks(monkeypatch):
    """Celery tasks queued by the code under test run at once, in this process (errors raised)."""
    from cletir_site.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(settings.MEDIA_ROOT / "incoming")
    return settings.MEDIA_ROOT


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)

    return make


@pytest.fixture
def database_fails_after_one_photo(monkeypatch):
    """Storing photos: the first is saved, then the database goes away (OperationalError for each
    later photo's row). Undo with monkeypatch.undo()."""
    from django.db import OperationalError

    from assets import ingest

    real_save = ingest._save_stored
    saved = []

    def save_once(asset):
        saved.append(asset)
        if len(saved) > 1:
            raise OperationalError("terminating connection due to administrator command")
        real_save(asset)

    monkeypatch.setattr(ingest, "_save_stored", save_once)
