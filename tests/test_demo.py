"""`make demo`'s runner: web + separate workers come up healthy, Ctrl-C stops them all."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.db import connection

from tests.conftest import PROJECT_DIR, database_url_for, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


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


def test_demo_serves_healthy_and_stops_on_ctrl_c(tmp_path):
    port = _free_port()
    env = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": database_url_for(connection.settings_dict),
           "CELERY_BROKER_URL": "filesystem://localhost//", "CLETIR_BROKER_DIR": str(tmp_path / "broker"),
           "CLETIR_DEMO_ADDRESS": f"127.0.0.1:{port}", "CLETIR_WORKER_HEARTBEAT_SECONDS": "2"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen([sys.executable, "-m", "cletir_site.demo"], cwd=PROJECT_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        status, body = wait_for(
            lambda: (r := _get(f"http://127.0.0.1:{port}/healthz")) and r[0] == 200 and len(r[1]["workers"]) == 2 and r,
            timeout=90, message="demo healthz 200 with both workers")
        assert body["database"] == "ok" and body["broker"] == "ok" and body["status"] == "ok"
        assert tuple(int(p) for p in body["pgvector"].split(".")[:2]) >= (0, 8)
        assert sorted(w["queues"] for w in body["workers"]) == [["default", "embed"], ["search"]]

        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
        log.close()
    output = (tmp_path / "demo.log").read_text()
    assert "cletir demo: stopped." in output
    assert _get(f"http://127.0.0.1:{port}/healthz") is None  # the web server is gone
    leftovers = subprocess.run(["pgrep", "-f", f"runserver 127.0.0.1:{port}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    from retrieval.models import WorkerHeartbeat

    assert not WorkerHeartbeat.objects.exists(), output  # the workers shut down warm and signed off
