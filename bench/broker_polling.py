"""Filesystem broker: what its polling interval gains (latency) and costs (CPU of an idle worker).

    .venv/bin/python bench/broker_polling.py [--intervals 1,0.1,0.05,0.02] [--idle-seconds 30]

For each interval, a real `celery worker` (queue `default`, concurrency 1, no model preload) runs
on a fresh filesystem broker folder with CLETIR_BROKER_POLL_SECONDS set to it, and the table
shows:

* queued: 20 `ping` tasks sent at once, seconds until all 20 results are back. The worker takes
  one task at a time and polls while it runs, so each task after the first waits for a poll;
* one by one: median seconds from sending a ping to its result, 20 pings sent one after the
  other (what a user's search or a thumbnail waits before a worker starts it);
* idle CPU: CPU time of the worker (main and pool process) over `--idle-seconds` with nothing to
  do, as a percentage of one core.

Uses the database of the settings (the embedded Postgres unless DATABASE_URL is set; migrated,
as after `make setup`) for the worker's heartbeat.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
PINGS = 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its children (the prefork pool)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return total


def measure(interval: float, idle_seconds: float) -> dict:
    import django

    django.setup()
    from cletir_site.broker import FILESYSTEM_URL, filesystem_options, filesystem_results, point_app_at
    from cletir_site.celery import app
    from retrieval.tasks import ping

    broker = Path(tempfile.mkdtemp(prefix="cletir-broker-"))
    # This process only sends and reads results; the worker polls with `interval`.
    point_app_at(app, FILESYSTEM_URL, filesystem_results(broker), filesystem_options(broker, interval))
    env = {**os.environ, "CELERY_BROKER_URL": FILESYSTEM_URL, "CLETIR_BROKER_DIR": str(broker),
           "CLETIR_BROKER_POLL_SECONDS": str(interval), "CLETIR_PRELOAD_MODELS": "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cletir_site", "worker", "--queues", "default", "--concurrency", "1",
         "--loglevel", "WARNING", "--hostname", f"bench-poll-{os.getpid()}@%h"],
        cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ping.delay("ready").get(timeout=120, interval=0.005)  # started and consuming

        t0 = time.perf_counter()
        results = [ping.delay(str(i)) for i in range(PINGS)]
        for result in results:
            result.get(timeout=120, interval=0.005)
        queued = time.perf_counter() - t0

        one_by_one = []
        for i in range(PINGS):
            t0 = time.perf_counter()
            ping.delay(str(i)).get(timeout=60, interval=0.005)
            one_by_one.append(time.perf_counter() - t0)

        time.sleep(2)  # let the last task's bookkeeping settle
        cpu0, wall0 = cpu_seconds(worker.pid), time.perf_counter()
        time.sleep(idle_seconds)
        idle = (cpu_seconds(worker.pid) - cpu0) / (time.perf_counter() - wall0)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        shutil.rmtree(broker, ignore_errors=True)
    return {"queued": queued, "one_by_one": statistics.median(one_by_one), "idle_cpu": idle}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="1,0.1,0.05,0.02",
                        help="polling intervals in seconds, comma-separated (kombu's default is 1)")
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    print(f"| polling interval | {PINGS} queued pings | one ping, sent alone (median) | idle worker CPU |")
    print("|---|---|---|---|")
    for interval in (float(x) for x in args.intervals.split(",")):
        row = measure(interval, args.idle_seconds)
        print(f"| {interval:g} s | {row['queued']:.2f} s | {row['one_by_one'] * 1000:.0f} ms | "
              f"{row['idle_cpu'] * 100:.1f}% of a core |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
