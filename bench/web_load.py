"""Read load on the web process: gunicorn with debug off, the pages and API calls an archivist
and a program make, several clients at once.

    .venv/bin/python bench/web_load.py [--clients 3,30] [--seconds 20] [--workers 3] [--photos 200]

A throw-away database (the project's Postgres) gets a user with a library of --photos small
photos (with thumbnails) and a finished search that ranked them all. gunicorn serves
`cletir_site.wsgi` with DJANGO_DEBUG=0 and --workers sync workers on 127.0.0.1; the clients are
threads of this process on the same machine (so they take CPU from the server, as on the 2-core
build machine), each sending one request after the other for --seconds, round-robin over:

    /                                   the library list (the home page)
    /libraries/<id>/                    a library's gallery, first page
    /search/<id>/                       a finished search's results page
    /api/searches/<id>/results/         the same results through the API
    /api/assets/?library=<id>           a library's photos through the API
    /photos/<id>/thumb                  a thumbnail (sent by Django: no X-Accel-Redirect here)

The table gives, per number of clients: requests, errors (any status but 200), requests per
second, and the latency median and 95th percentile.
"""
from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(photos: int, media_root: Path) -> tuple[str, list[str]]:
    """The data of the load: (a session cookie of the user, the URLs to request)."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.test import Client
    from PIL import Image

    from assets.models import Asset, Library, Rendition
    from django.db import transaction

    from retrieval.models import Search
    from retrieval.search.results import store_results

    user = get_user_model().objects.create_user("archivist", password="load-test-password")
    library = Library.objects.create(name="Harbour", owner=user)
    folder = media_root / "load"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=85)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(folder / "thumb.webp", quality=80)
    assets = Asset.objects.bulk_create([
        Asset(library=library, file="load/photo.jpg", original_name=f"harbour-{i:04d}.jpg", sha256=f"{i:064x}",
              size_bytes=20_000, width=320, height=240, format="JPEG", status=Asset.Status.READY)
        for i in range(photos)])
    Rendition.objects.bulk_create([Rendition(asset=a, name="thumb", file="load/thumb.webp", width=320, height=240)
                                   for a in assets])
    search = Search.objects.create(user=user, text="sailboat", k=4, status=Search.Status.DONE, progress=100,
                                   result_count=photos, match_count=photos // 10, match_cutoff=0.5)
    search.libraries.set([library])
    ranks = np.arange(photos)
    with transaction.atomic():
        store_results(search, np.array([a.pk for a in assets]), 1 - ranks / photos, np.full(photos, 0.5),
                      0.5 - ranks / photos)
    client = Client()
    client.force_login(user)  # a real session row: the server reads it from the database
    urls = ["/", f"/libraries/{library.pk}/", f"/search/{search.pk}/", f"/api/searches/{search.pk}/results/",
            f"/api/assets/?library={library.pk}", f"/photos/{assets[0].pk}/thumb"]
    return client.cookies["sessionid"].value, urls


def database_url(db: dict) -> str:
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{db['USER']}@{host}{port}/{db['NAME']}"


def load(port: int, cookie: str, urls: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            url = urls[i % len(urls)]
            i += 1
            started = time.perf_counter()
            # A new connection per request: gunicorn's sync workers close each one.
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("GET", url, headers={"Cookie": f"sessionid={cookie}", "Host": "127.0.0.1"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError as exc:
                status = type(exc).__name__
            finally:
                connection.close()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    errors.append(f"{status} {url}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "rate": len(latencies) / wall, "p50": statistics.median(ordered) * 1000,
            "p95": ordered[int(0.95 * (len(ordered) - 1))] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="3,30")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_DEBUG", "1")  # this process only seeds; the server runs with debug off

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from cletir_site.embedded_postgres import start_configured

    start_configured()
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-web-"))
    settings.MEDIA_ROOT = workdir / "media"
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    rows = []
    try:
        cookie, urls = seed(args.photos, settings.MEDIA_ROOT)
        port = free_port()
        env = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": settings.SECRET_KEY,
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": database_url(connection.settings_dict),
               "CLETIR_MEDIA_ROOT": str(settings.MEDIA_ROOT), "DJANGO_SETTINGS_MODULE": "cletir_site.settings",
               "DJANGO_LOG_LEVEL": "WARNING", "AXES_ENABLED": "0"}
        log = open(workdir / "gunicorn.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "cletir_site.wsgi:application", f"--bind=127.0.0.1:{port}",
             f"--workers={args.workers}", "--timeout=120"], cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):  # until the server answers
                warm = load(port, cookie, urls[:1], 1, 0.01)
                if warm["requests"] and not warm["errors"]:
                    break
                time.sleep(0.1)
            else:
                raise SystemExit(f"gunicorn did not answer; its log: {log.name}")
            load(port, cookie, urls, args.workers, 3)  # every worker has imported and connected
            for clients in (int(c) for c in args.clients.split(",")):
                rows.append(load(port, cookie, urls, clients, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"\ngunicorn, {args.workers} sync workers, DJANGO_DEBUG=0, {args.photos} photos; clients on the same "
          f"{os.cpu_count()} CPU cores; {args.seconds:g} s per row; requests round-robin over {len(urls)} pages and "
          "API calls\n")
    print("| clients | requests | errors | requests/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['rate']:.1f} | {row['p50']:.0f} | "
              f"{row['p95']:.0f} |")
        if row["first_errors"]:
            print(f"  errors, e.g.: {row['first_errors']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
