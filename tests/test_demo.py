"""`make demo`'s runner: set-up, web + separate workers + beat come up healthy, the first screen
says which models run, Ctrl-C stops them all and the embedded Postgres the demo started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from cletir_site import embedded_postgres
from tests.conftest import PROJECT_DIR, database_url_for, wait_for

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


class Demo:
    """A `python -m cletir_site.demo` process: what it shows on the terminal (`screen`) and
    what it writes to its log file."""

    def __init__(self, env: dict, tmp_path: Path) -> None:
        self.port = int(env["CLETIR_DEMO_ADDRESS"].rsplit(":", 1)[1])
        self.log_path = Path(env["CLETIR_LOG_DIR"]) / "demo.log"
        self.screen_path = tmp_path / f"screen-{self.port}.txt"
        self._screen = open(self.screen_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "cletir_site.demo"], cwd=PROJECT_DIR, env=env,
                                        stdout=self._screen, stderr=subprocess.STDOUT)

    def screen(self) -> str:
        return self.screen_path.read_text(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def healthz(self) -> tuple[int, dict] | None:
        return _get(f"http://127.0.0.1:{self.port}/healthz")

    def ctrl_c(self) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.process.wait(timeout=90)

    def close(self) -> None:
        if self.process.poll() is None:  # a failed test: stop the demo's processes too
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._screen.close()


@contextmanager
def running_demo(env: dict, tmp_path: Path):
    demo = Demo(env, tmp_path)
    try:
        yield demo
    finally:
        demo.close()


def demo_env(tmp_path: Path, tiny_model_dir: Path, **extra: str) -> dict:
    env = {**os.environ, "DJANGO_DEBUG": "1", "CELERY_BROKER_URL": "filesystem://localhost//",
           "CLETIR_BROKER_DIR": str(tmp_path / "broker"), "CLETIR_MEDIA_ROOT": str(tmp_path / "media"),
           "CLETIR_LOG_DIR": str(tmp_path / "log"), "CLETIR_MODEL_DIR": str(tiny_model_dir),
           "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat-schedule"),
           "CLETIR_DEMO_ADDRESS": f"127.0.0.1:{_free_port()}", "CLETIR_WORKER_HEARTBEAT_SECONDS": "2", **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def wait_until_healthy(demo: Demo) -> dict:
    status, body = wait_for(
        lambda: (r := demo.healthz()) and r[0] == 200 and len(r[1]["workers"]) == 2 and r,
        timeout=180, message=f"demo healthz 200 with both workers; screen:\n{demo.screen()}")
    return body


@pytest.mark.django_db(transaction=True)
def test_demo_sets_up_serves_healthy_runs_beat_and_stops_on_ctrl_c(tmp_path, tiny_model_dir):
    env = demo_env(tmp_path, tiny_model_dir, DATABASE_URL=database_url_for(connection.settings_dict),
                   CLETIR_SWEEP_INTERVAL_SECONDS="1")
    with running_demo(env, tmp_path) as demo:
        body = wait_until_healthy(demo)
        assert body["database"] == "ok" and body["broker"] == "ok" and body["status"] == "ok"
        assert tuple(int(p) for p in body["pgvector"].split(".")[:2]) >= (0, 8)
        assert sorted(w["queues"] for w in body["workers"]) == [["default", "embed"], ["search"]]
        # Beat sends the stale-work sweep (every second here), the bulk worker runs it and
        # stores its report.
        results = tmp_path / "broker" / "results"
        wait_for(lambda: any('"searches_failed"' in f.read_text(errors="replace") for f in results.iterdir()),
                 timeout=90, message="a sweep report, from a sweep sent by beat and run by the bulk worker")
        # Beat's schedule where it was told (shelve adds a suffix with some dbm modules).
        assert [p.name for p in tmp_path.glob("beat-schedule*")]

        assert demo.ctrl_c() == 0
        screen = demo.screen()

    # The first screen: the set-up's results, one line saying which models run and why; the
    # fallback's reasons (a long hub error), warnings and progress bars only in the log file.
    lines = screen.splitlines()
    assert lines[0].startswith("database: ok (DATABASE_URL, ") and lines[1] == "broker: ok (filesystem://localhost//)"
    assert "Created the admin user. It is shown only this once:" in screen
    models = [line for line in lines if line.startswith("Models: ")]
    assert models == [
        f"Models: 'tiny' random-weight demo models (meaningless results), because the 'default' profile's weights "
        f"are not in {tiny_model_dir}; README \"Models and real weights\" says how to add them."]
    assert "sample library “Sample photos” (owner admin): 20 photos added, 20 in all" in lines
    for noise in ("Failed initial config", "Traceback", "Warning", "it/s]", "celery beat v", "Starting development"):
        assert noise not in screen, noise
    log = demo.log()
    assert "No weights for the 'default' profile, so the 'tiny' models are used: VLM weights" in log
    assert "it/s]" not in log  # no progress bars where no terminal watches
    assert f"The web server, the workers and beat write to {demo.log_path}. Press Ctrl-C to stop." in screen

    assert "cletir demo: stopped." in screen
    assert demo.healthz() is None  # the web server is gone
    for command_line in (f"runserver {env['CLETIR_DEMO_ADDRESS']}", f"beat --schedule {env['CELERY_BEAT_SCHEDULE_FILENAME']}"):
        leftovers = subprocess.run(["pgrep", "-f", command_line], capture_output=True, text=True)
        assert leftovers.stdout.strip() == "", command_line
    from retrieval.models import WorkerHeartbeat

    assert not WorkerHeartbeat.objects.exists(), demo.log()  # the workers shut down warm and signed off


def test_demo_stops_the_embedded_postgres_it_started_and_only_that(tmp_path, tiny_model_dir):
    # A short data folder: the socket path must stay short.
    pgdata = tmp_path / "pg"
    env = demo_env(tmp_path, tiny_model_dir, DATABASE_URL="", CLETIR_PGDATA=str(pgdata))
    try:
        with running_demo(env, tmp_path) as demo:
            wait_until_healthy(demo)
            assert embedded_postgres.is_running(pgdata)
            assert demo.ctrl_c() == 0
            screen = demo.screen()
        assert screen.startswith(f"cletir demo: started the embedded Postgres in {pgdata}; it stops with the demo.\n")
        assert "cletir demo: stopped the embedded Postgres it had started." in screen
        assert not embedded_postgres.is_running(pgdata)

        # Running before the demo (another process uses it): left running.
        assert embedded_postgres.start(pgdata) is True
        env["CLETIR_DEMO_ADDRESS"] = f"127.0.0.1:{_free_port()}"
        with running_demo(env, tmp_path) as demo:
            wait_for(lambda: "Press Ctrl-C to stop." in demo.screen(), timeout=180,
                     message=f"the demo's processes started; screen:\n{demo.screen()}")
            assert demo.ctrl_c() == 0
            screen = demo.screen()
        assert screen.startswith(f"cletir demo: the embedded Postgres in {pgdata} was already running; "
                                 "it keeps running after the demo.\n")
        assert "stopped the embedded Postgres" not in screen
        assert embedded_postgres.is_running(pgdata)
    finally:
        embedded_postgres.stop(pgdata)


def test_ctrl_c_during_the_set_up_stops_the_embedded_postgres_the_demo_started(tmp_path, tiny_model_dir):
    pgdata = tmp_path / "pg"
    env = demo_env(tmp_path, tiny_model_dir, DATABASE_URL="", CLETIR_PGDATA=str(pgdata))
    try:
        with running_demo(env, tmp_path) as demo:
            wait_for(lambda: "started the embedded Postgres" in demo.screen(), timeout=120,
                     message=f"the demo started the server; screen:\n{demo.screen()}")
            assert demo.ctrl_c() == 130
            screen = demo.screen()
        assert "cletir demo: interrupted during the set-up." in screen
        assert "cletir demo: stopped the embedded Postgres it had started." in screen
        assert not embedded_postgres.is_running(pgdata)
    finally:
        embedded_postgres.stop(pgdata)
