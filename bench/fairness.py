"""Searches of several users on one search worker: does one heavy user hold the others back?

    .venv/bin/python bench/fairness.py [--heavy 60] [--users 10] [--per-user 5] [--photos 300]

A real `celery worker -Q search` (concurrency 1, the tiny random-weight models, the
single-machine filesystem broker in a temporary folder) runs on a throw-away database with a
library of planted photos; searches are made through the product's service (`create_search`,
as the pages and the API do), so they are queued exactly as a user's would be.

* One heavy user: a user starts --heavy searches that generate proxies (each a new category),
  then a second user starts one. The table gives the second user's wait (made -> done), the
  work of that search itself (its task's `timings.total`), and how many of the heavy user's
  searches ran before it, with CLETIR_SEARCHES_IN_FLIGHT_PER_USER at the site default and with
  0 (no per-user limit: first in, first out), side by side.
* Many users at once: --users users each start --per-user searches together; seconds until all
  are done, and each search's wait p50 / p95.

The tiny models make a search's own work a few tens of milliseconds: the waits measure the
queueing, not the models (with real models every search's work, and so every wait, is larger).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def database_url(db: dict) -> str:
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{db['USER']}@{host}{port}/{db['NAME']}"


class World:
    """A throw-away database with the tiny space, a library of planted photos and a search worker."""

    def __init__(self, workdir: Path, photos: int, in_flight: int) -> None:
        from django.conf import settings
        from django.db import connection

        from assets.models import Asset, Library
        from cletir_site.broker import FILESYSTEM_URL, filesystem_options, filesystem_results, point_app_at
        from cletir_site.celery import app
        from retrieval.indexing.spaces import space_for_profile
        from retrieval.models import AssetEmbedding, EmbeddingSpace

        self.tag = f"limit{in_flight}"  # names and texts of its own: nothing cached from another world
        settings.CLETIR_SEARCHES_IN_FLIGHT_PER_USER = in_flight
        settings.CLETIR_GENERATING_SEARCHES_PER_HOUR = 0
        self.space = space_for_profile("tiny")
        EmbeddingSpace.objects.filter(pk=self.space.pk).update(is_active=True, is_serving=True)
        self.library = Library.objects.create(name=f"planted {self.tag}", owner=self.user(f"owner-{self.tag}"))
        rng = np.random.default_rng(0)
        assets = Asset.objects.bulk_create([
            Asset(library=self.library, file=f"bench/{i}.jpg", sha256=f"{time.monotonic_ns()}{i:08d}".ljust(64, "0"),
                  status=Asset.Status.READY) for i in range(photos)])
        vectors = rng.standard_normal((photos, self.space.dim)).astype(np.float32)
        AssetEmbedding.objects.bulk_create([AssetEmbedding(asset=a, space=self.space, vector=v)
                                            for a, v in zip(assets, vectors)])
        broker = workdir / f"broker-{in_flight}"
        options = filesystem_options(broker, settings.CLETIR_BROKER_POLL_SECONDS)
        point_app_at(app, FILESYSTEM_URL, filesystem_results(broker), options)
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "CELERY_BROKER_URL": FILESYSTEM_URL,
               "CLETIR_BROKER_DIR": str(broker), "CLETIR_MEDIA_ROOT": str(settings.MEDIA_ROOT), "DJANGO_DEBUG": "1",
               "CLETIR_SEARCHES_IN_FLIGHT_PER_USER": str(in_flight), "CLETIR_TORCH_THREADS": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(workdir / f"worker-{in_flight}.log", "wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cletir_site", "worker", "--queues", "search", "--concurrency", "1",
             "--loglevel", "WARNING", "--hostname", f"bench-fair-{in_flight}-{os.getpid()}@%h"],
            cwd=PROJECT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def user(self, name: str):
        from django.contrib.auth import get_user_model

        from assets.models import Library, LibraryMembership

        user, _ = get_user_model().objects.get_or_create(username=f"{name}-{os.getpid()}")
        library = getattr(self, "library", None)
        if isinstance(library, Library) and library.owner_id != user.pk:
            LibraryMembership.objects.get_or_create(library=library, user=user)
        return user

    def search(self, user, text: str):
        from retrieval.search.service import SearchRequest, create_search

        return create_search(user, SearchRequest(text=text, libraries=[self.library.pk], k=2))

    def wait_done(self, ids: list[int], timeout: float = 900) -> None:
        from retrieval.models import Search

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            searches = Search.objects.filter(pk__in=ids)
            # Done, and its last write made (the task's total is written after the match count).
            if not searches.unfinished().exists() and not searches.filter(
                    status=Search.Status.DONE).exclude(timings__has_key="total").exists():
                return
            time.sleep(0.02)
        raise SystemExit(f"searches not done after {timeout} s; worker log: {self.log.name}")

    def warm(self) -> None:
        """The worker has loaded its models and runs searches (first search done)."""
        first = self.search(self.user(f"warm-up-{self.tag}"), f"warm up {self.tag}")
        self.wait_done([first.pk], timeout=300)

    def close(self) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=60)
        self.log.close()


def finished(ids: list[int]) -> list:
    from retrieval.models import Search

    return list(Search.objects.filter(pk__in=ids))


def heavy_user(world: World, heavy: int) -> dict:
    a, b = world.user(f"heavy-{world.tag}"), world.user(f"light-{world.tag}")
    ids = [world.search(a, f"category {i} of {world.tag}").pk for i in range(heavy)]
    light = world.search(b, f"lighthouse {world.tag}")
    world.wait_done(ids + [light.pk])
    rows = {s.pk: s for s in finished(ids + [light.pk])}
    mine = rows[light.pk]
    before = sum(1 for pk in ids if rows[pk].started_at < mine.started_at)
    assert mine.status == "done", (mine.status, mine.error)
    return {"wait": (mine.finished_at - mine.created_at).total_seconds(), "own": mine.timings["total"], "before": before}


def many_users(world: World, users: int, per_user: int) -> dict:
    people = [world.user(f"user{u}-{world.tag}") for u in range(users)]
    started = time.perf_counter()
    ids = [world.search(person, f"subject {n} of {person.pk}").pk for n in range(per_user) for person in people]
    world.wait_done(ids)
    rows = finished(ids)
    waits = sorted((s.finished_at - s.created_at).total_seconds() for s in rows)
    return {"all_done": time.perf_counter() - started, "p50": statistics.median(waits),
            "p95": waits[int(0.95 * (len(waits) - 1))], "failed": sum(s.status != "done" for s in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heavy", type=int, default=60)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=5)
    parser.add_argument("--photos", type=int, default=300)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from cletir_site.embedded_postgres import start_configured
    from retrieval.engine.build_models import build_profile

    start_configured()
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-fair-"))
    os.environ["CLETIR_MODEL_DIR"] = str(workdir / "models")
    build_profile("tiny", workdir / "models")
    setup_test_environment()
    settings.MEDIA_ROOT = workdir / "media"
    settings.MEDIA_ROOT.mkdir()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    default_limit = settings.CLETIR_SEARCHES_IN_FLIGHT_PER_USER
    results = {}
    try:
        for limit in (default_limit, 0):
            world = World(workdir, args.photos, limit)
            try:
                world.warm()
                results[limit] = (heavy_user(world, args.heavy), many_users(world, args.users, args.per_user))
            finally:
                world.close()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"\nOne search worker (concurrency 1), tiny models, filesystem broker polled every "
          f"{settings.CLETIR_BROKER_POLL_SECONDS:g} s, {args.photos} photos, {os.cpu_count()} CPU cores.\n")
    print(f"| searches per user in the queue | another user's one search after {args.heavy} of a heavy user's: "
          "wait | its own work | the heavy user's searches run before it |")
    print("|---|---|---|---|")
    for limit, (heavy, _) in results.items():
        label = f"{limit} (CLETIR_SEARCHES_IN_FLIGHT_PER_USER)" if limit else "no limit (first in, first out)"
        print(f"| {label} | {heavy['wait']:.2f} s | {heavy['own'] * 1000:.0f} ms | {heavy['before']} |")
    print(f"\n| searches per user in the queue | {args.users} users x {args.per_user} searches at once: all done | "
          "wait p50 | wait p95 | failed |")
    print("|---|---|---|---|---|")
    for limit, (_, many) in results.items():
        label = str(limit) if limit else "no limit"
        print(f"| {label} | {many['all_done']:.1f} s | {many['p50']:.2f} s | {many['p95']:.2f} s | {many['failed']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
