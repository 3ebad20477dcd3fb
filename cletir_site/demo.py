"""`make demo`: run the web server and Celery workers side by side; Ctrl-C stops them all.

Run as `python -m cletir_site.demo` after the Makefile's set-up (migrations, admin user).
The two are separate processes, as in production: the web process queues tasks through the
broker and the worker executes them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ADDRESS = os.environ.get("CLETIR_DEMO_ADDRESS", "127.0.0.1:8000")
STOP_GRACE_SECONDS = 20


def _children() -> list[tuple[str, list[str]]]:
    python = sys.executable

    def worker(name: str, queues: str) -> list[str]:
        return [python, "-m", "celery", "-A", "cletir_site", "worker", "--queues", queues, "--concurrency", "1",
                "--loglevel", "INFO", "--hostname", f"demo-{name}@%h"]

    # Two workers, as on a GPU site: a search never waits behind bulk indexing or thumbnails.
    return [
        ("web", [python, "manage.py", "runserver", ADDRESS, "--noreload"]),
        ("search worker", worker("search", "search")),
        ("bulk worker", worker("bulk", "embed,default")),
    ]


def main() -> int:
    from cletir_site import embedded_postgres

    # Stop the embedded Postgres at the end only if this demo is the one that started it
    # (checked before Django's settings start it).
    postgres_was_running = embedded_postgres.is_running(embedded_postgres.configured_pgdata())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
    import django

    django.setup()
    from django.conf import settings

    processes: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for name, argv in _children():
        # Own process groups: the terminal's Ctrl-C reaches only this runner, which then stops
        # the children in order (a worker finishing its task before it exits).
        processes[name] = subprocess.Popen(argv, start_new_session=True)
    print(f"\ncletir demo: http://{ADDRESS}/  (admin: http://{ADDRESS}/admin/, health: /healthz)\n"
          "Press Ctrl-C to stop.\n", flush=True)

    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"cletir demo: the {name} process exited with status {process.returncode}; stopping.", flush=True)
                exit_code = process.returncode or 1
                stopping = True
        time.sleep(0.5)

    print("\ncletir demo: stopping the web server and the workers...", flush=True)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Celery: warm shutdown
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"cletir demo: {name} did not stop in {STOP_GRACE_SECONDS}s; killing it.", flush=True)
            process.kill()
            process.wait()
    if settings.DATABASE_IS_EMBEDDED and not postgres_was_running:
        embedded_postgres.stop(settings.EMBEDDED_PGDATA)
    print("cletir demo: stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
