"""Export benchmark: peak memory and speed of streaming a search's matches as CSV and as a ZIP
of originals, for 1,000 and 10,000 photos of 10 MB.

    .venv/bin/python bench/export.py [--photos 1000,10000] [--megabytes 10]

Runs on a throw-away database of the project's Postgres (created and dropped here) and a
temporary media folder. The photos cost no disk: one small JPEG padded with a hole to 10 MB (a
sparse file) is hard-linked under every photo's stored name, so 10,000 photos of 10 MB are
100 GB to read and stream but a few KB on disk (the reads come from the page cache). A finished
search holds them all as matches; the export is requested through Django's test client, as a
browser would (the page's URL, session login), and its streamed body is read chunk by chunk and
dropped, as a web server sends it on.

Memory: each export runs in a fresh process of its own (this script with --child), which
starts Django, logs in, streams the export and reports its peak resident set (VmHWM: Linux,
over its whole life). An export of a search with no matches gives the baseline of such a
process; the exports of 1,000 and 10,000 photos are compared with it. (Measured in the process
that also planted the photos, the figure would hide the export's allocations in heap memory the
planting freed.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
BENCH_USER = "bench-export"
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_resident_mb() -> float:
    """VmHWM of this process (its peak resident set so far), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def one_padded_photo(path: Path, megabytes: int) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), (40, 90, 160)).save(path, "JPEG")
    with open(path, "r+b") as handle:
        handle.truncate(megabytes * 1_000_000)  # a hole: JPEG readers stop at the end-of-image marker


def plant_search(user, media_root: Path, source: Path, count: int):
    """A finished search whose `count` matches are photos hard-linked to `source`."""
    from assets.models import Asset, Library
    from django.db import transaction

    from retrieval.models import Search
    from retrieval.search.results import store_results

    library = Library.objects.create(name=f"bench export {count}", owner=user)
    folder = media_root / "libraries" / str(library.pk)
    folder.mkdir(parents=True)
    assets = []
    for i in range(count):
        name = f"libraries/{library.pk}/{i:064x}.jpg"
        os.link(source, media_root / name)
        assets.append(Asset(library=library, file=name, sha256=f"{i:064x}", original_name=f"holiday/IMG_{i:05d}.JPG",
                            status=Asset.Status.READY, size_bytes=source.stat().st_size, keywords=["sea", "boat"]))
    assets = Asset.objects.bulk_create(assets, batch_size=2000)
    search = Search.objects.create(user=user, text="boat", k=4, status=Search.Status.DONE, result_count=count,
                                   match_count=count, match_cutoff=0.1)
    search.libraries.add(library)
    ranks = np.arange(1, count + 1)
    with transaction.atomic():
        store_results(search, np.array([a.pk for a in assets]), 1 - ranks / (2 * count), np.full(count, 0.3),
                      0.7 - ranks / (2 * count))
    return search


def child(url: str, database: str) -> None:
    """Stream one export (--child): print bytes, seconds and the process's peak RSS as JSON."""
    import json

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    settings.DATABASES["default"]["NAME"] = database  # the parent's throw-away database
    setup_test_environment()
    client = Client()
    client.force_login(get_user_model().objects.get(username=BENCH_USER))
    start = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200 and response.streaming, response
    sent = 0
    for chunk in response.streaming_content:  # dropped, as a web server sends it on
        sent += len(chunk)
    response.close()
    print(json.dumps({"bytes": sent, "seconds": time.perf_counter() - start, "peak_mb": peak_resident_mb()}))


def measure(url: str, database: str, media_root: Path) -> dict:
    import json
    import subprocess

    env = {**os.environ, "CLETIR_MEDIA_ROOT": str(media_root)}
    done = subprocess.run([sys.executable, __file__, "--child", url, "--database", database], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="1000,10000", help="comma-separated photo counts")
    parser.add_argument("--megabytes", type=int, default=10, help="size of every photo")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.database)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import setup_test_environment

    from cletir_site.embedded_postgres import start_configured

    start_configured()  # the embedded Postgres, when DATABASE_URL is unset
    setup_test_environment()
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-export-"))
    settings.MEDIA_ROOT = workdir / "media"
    settings.MEDIA_ROOT.mkdir()
    source = workdir / "photo.jpg"
    one_padded_photo(source, args.megabytes)
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    database = connection.settings_dict["NAME"]
    rows = []
    try:
        user = get_user_model().objects.create_user(BENCH_USER, password="x")
        for count in [0, *(int(n) for n in args.photos.split(","))]:
            search = plant_search(user, settings.MEDIA_ROOT, source, count)
            for kind in ("csv", "zip"):
                result = measure(f"/search/{search.pk}/export.{kind}", database, settings.MEDIA_ROOT)
                rows.append({"photos": count, "kind": kind, **result})
                print(f"{count} photos, {kind}: {result}", file=sys.stderr)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(workdir, ignore_errors=True)

    baseline = {r["kind"]: r["peak_mb"] for r in rows if r["photos"] == 0}
    print(f"\n| photos of {args.megabytes} MB | export | streamed | seconds | MB/s | peak RSS of the process | "
          "above an empty export |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photos']:,} | {r['kind']} | {r['bytes'] / 1e9:.2f} GB | {r['seconds']:.1f} | "
              f"{r['bytes'] / 1e6 / max(r['seconds'], 1e-9):.0f} | {r['peak_mb']:.0f} MB | "
              f"**{r['peak_mb'] - baseline[r['kind']]:+.1f} MB** |")
    print(f"\nCPU cores {os.cpu_count()}; photos hard-linked to one sparse {args.megabytes} MB file (page cache reads)")


if __name__ == "__main__":
    main()
