"""`make demo`: set the site up and run it (web server, two Celery workers, Celery beat); Ctrl-C
stops it all.

Run as `python -m cletir_site.demo` (what the Makefile's `demo` target does). The runner owns
the whole run:

1. without DATABASE_URL it starts the embedded Postgres, and remembers whether it did;
2. it runs the set-up commands (`SETUP`) one after another;
3. it starts the web server, a search worker, a bulk worker and beat (`_children`) as separate
   processes, as in production: the web process queues tasks through the broker and the
   workers execute them; beat sends the stale-work sweep;
4. on Ctrl-C or SIGTERM (in any step), or when one of the processes exits, it stops them and,
   if step 1 started the embedded Postgres, stops that too. A server that was already running
   (another checkout's tests, a developer's shell) is left running.

The terminal shows the runner's lines and the set-up commands' results; the details (the
set-up commands' stderr: warnings, the model fallback's reasons) and all the output of the web
server, the workers and beat go to the log file `CLETIR_LOG_DIR/demo.log` (var/log/demo.log).
When a set-up command fails, its messages are printed from there.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

ADDRESS = os.environ.get("CLETIR_DEMO_ADDRESS", "127.0.0.1:8000")
MANAGE = str(Path(__file__).resolve().parent.parent / "manage.py")
STOP_GRACE_SECONDS = 20

# manage.py commands run before the processes start, and whether their stdout is for the
# terminal (a result the user needs: the admin password once, which models run) or for the log.
SETUP: list[tuple[list[str], bool]] = [
    (["check_services"], True),
    (["migrate", "--noinput"], False),
    (["ensure_admin"], True),
    (["activate_profile", "--fallback-tiny"], True),
    (["import_sample_library"], True),
]


class SetupFailed(Exception):
    def __init__(self, command: list[str], returncode: int, messages: str) -> None:
        super().__init__(f"`manage.py {' '.join(command)}` failed (status {returncode})")
        self.returncode = returncode
        self.messages = messages


def _children(beat_schedule: str) -> list[tuple[str, list[str]]]:
    python = sys.executable

    def worker(name: str, queues: str) -> list[str]:
        return [python, "-m", "celery", "-A", "cletir_site", "worker", "--queues", queues, "--concurrency", "1",
                "--loglevel", "INFO", "--hostname", f"demo-{name}@%h"]

    # Two workers, as on a GPU site: a search never waits behind bulk indexing or thumbnails.
    # Beat's schedule file is named on its command line (CELERY_BEAT_SCHEDULE_FILENAME, under
    # var/ by default), which also tells this demo's beat apart from another checkout's.
    return [
        ("web", [python, MANAGE, "runserver", ADDRESS, "--noreload"]),
        ("search worker", worker("search", "search")),
        ("bulk worker", worker("bulk", "embed,default")),
        ("beat", [python, "-m", "celery", "-A", "cletir_site", "beat", "--schedule", beat_schedule,
                  "--loglevel", "INFO"]),
    ]


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (var/log/demo.log)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _say(message: str) -> None:
    print(f"cletir demo: {message}", flush=True)


def _run_setup(log: BinaryIO) -> None:
    for command, stdout_to_terminal in SETUP:
        log.write(f"\n--- manage.py {' '.join(command)}\n".encode())
        log.flush()
        start = log.tell()
        completed = subprocess.run([sys.executable, MANAGE, *command], stdout=None if stdout_to_terminal else log,
                                   stderr=log)
        if completed.returncode != 0:
            with open(log.name, "rb") as written:
                written.seek(start)
                messages = written.read().decode(errors="replace").strip()
            raise SetupFailed(command, completed.returncode, messages)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_processes(log: BinaryIO, beat_schedule: str) -> int:
    """Start the processes, wait for Ctrl-C/SIGTERM or one of them to exit, stop them all."""
    processes: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for name, argv in _children(beat_schedule):
        # Own process groups: the terminal's Ctrl-C reaches only this runner, which then stops
        # the children in order (a worker finishing its task before it exits).
        processes[name] = subprocess.Popen(argv, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"\ncletir demo: http://{ADDRESS}/  (admin: http://{ADDRESS}/admin/, health: /healthz)\n"
          f"The web server, the workers and beat write to {_shown(Path(log.name))}. Press Ctrl-C to stop.\n",
          flush=True)

    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                _say(f"the {name} process exited with status {process.returncode} (see {_shown(Path(log.name))}); "
                     "stopping.")
                exit_code = process.returncode or 1
                stopping = True
        time.sleep(0.5)

    _say("stopping the web server, the workers and beat...")
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Celery: warm shutdown
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in {STOP_GRACE_SECONDS}s; killing it.")
            process.kill()
            process.wait()
    return exit_code


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
    import django

    django.setup()
    from django.conf import settings

    from cletir_site import embedded_postgres

    settings.CLETIR_LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = settings.CLETIR_LOG_DIR / "demo.log"
    # SIGTERM during the set-up ends it like Ctrl-C (KeyboardInterrupt), so the clean-up below runs.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started_postgres = False
    exit_code = 0
    with open(log_path, "ab") as log:
        log.write(f"\n=== cletir demo, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        try:
            started_postgres = embedded_postgres.start_configured()
            if started_postgres:
                _say(f"started the embedded Postgres in {_shown(settings.EMBEDDED_PGDATA)}; it stops with the demo.")
            elif settings.DATABASE_IS_EMBEDDED:
                _say(f"the embedded Postgres in {_shown(settings.EMBEDDED_PGDATA)} was already running; "
                     "it keeps running after the demo.")
            _run_setup(log)
            exit_code = _run_processes(log, str(settings.CELERY_BEAT_SCHEDULE_FILENAME))
        except SetupFailed as failure:
            _say(f"{failure}:\n{failure.messages}\n(full log: {_shown(log_path)})")
            exit_code = failure.returncode
        except KeyboardInterrupt:
            _say("interrupted during the set-up.")
            exit_code = 130
        finally:
            # A second Ctrl-C or SIGTERM must not cut the clean-up short (pg_ctl inherits the
            # ignore too).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if started_postgres and embedded_postgres.stop(settings.EMBEDDED_PGDATA):
                _say("stopped the embedded Postgres it had started.")
            elif started_postgres:
                _say(f"could not stop the embedded Postgres (its log: {_shown(settings.EMBEDDED_PGDATA / 'log')}); "
                     "`manage.py embedded_postgres stop` stops it.")
    _say("stopped.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
