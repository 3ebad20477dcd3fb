"""Ingest benchmark: photos/s for importing, for renditions and for indexing generated photos, and
the share of indexing time spent outside the models' forward passes.

    .venv/bin/python bench/ingest.py [--photos 200] [--profiles tiny,default-random]
                                     [--rendition-photos 24] [--rendition-rounds 3]

Runs on a throw-away database of the project's Postgres (created and dropped here) and a
temporary media folder. Photos are generated 1600x1200 JPEGs with smooth structure and noise
(camera-like sizes and compression), written to a folder first, as `import_folder` would read
them. The stages:

* renditions of 12-megapixel (4000x3000) camera-like JPEGs, the Pillow path and the libvips
  path side by side in one run (rounds interleaved, the median of each reported; a photo's 1600
  px JPEG preview and 320 px WebP thumbnail, files and rows included): one photo at a time
  (`make_renditions`, what the per-photo task did) with each engine, and the batched task path
  (`render_pending`: claims, CLETIR_RENDITION_THREADS threads, files, rows). `--profiles ""`
  runs this part alone.
* import: `ingest_file` per photo (hash, validation, store, rows); thumbnails are a separate
  stage on the `default` queue (the batched task path) and are timed apart.
* index: the `index_space` task body on the `embed` queue (claim a batch, decode, encode, write
  vectors). The forward passes of the two encoders are timed by wrapping exactly the modules
  that run them (open_clip `encode_image`, the DINOv2 model); "outside" is everything else:
  decoding and resizing, the encoders' preprocessing, tensor conversion, database reads and
  writes, task overhead.

The full-size random-weight twins measure speed only (their vectors are meaningless).
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
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_photos(folder: Path, count: int, size=(1600, 1200)) -> list[Path]:
    """Smooth random scenes (upsampled from a coarse grid) plus sensor-like noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = (np.asarray(coarse, dtype=np.int16) + rng.normal(0, 10, (size[1], size[0], 3)).astype(np.int16))
        path = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=88)
        paths.append(path)
    return paths


class ForwardTimer:
    """Accumulates wall time spent inside wrapped callables."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def bench_profile(profile: str, photo_paths: list[Path], batch_size: int) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from assets.ingest import ingest_file
    from assets.models import Library
    from assets.rendition_batches import render_pending
    from assets.renditions import new_claim
    from retrieval.engine.encoders import load_encoders
    from retrieval.indexing.photos import embed_batch
    from retrieval.indexing.spaces import space_for_profile

    user, _ = get_user_model().objects.get_or_create(username=f"bench-{profile}")
    library = Library.objects.create(name=f"bench {profile}", owner=user)

    start = time.perf_counter()
    for path in photo_paths:
        with path.open("rb") as handle:
            outcome = ingest_file(library, handle, path.name, uploaded_by=user)
        assert outcome.status == "stored", outcome
    import_s = time.perf_counter() - start

    start = time.perf_counter()
    report = render_pending(new_claim(), seconds=float("inf"))
    renditions_s = time.perf_counter() - start
    assert (report.made, report.failed) == (len(photo_paths), 0), report

    load_start = time.perf_counter()
    space = space_for_profile(profile)
    encoders = load_encoders(profile)
    load_s = time.perf_counter() - load_start
    timer = ForwardTimer()
    encoders._vlm.encode_image = timer.wrap(encoders._vlm.encode_image)
    encoders._vision.forward = timer.wrap(encoders._vision.forward)
    # Warm-up outside the timing (first-call allocations, oneDNN kernel selection).
    from PIL import Image

    warm = [Image.new("RGB", (640, 480), "gray")] * 2
    encoders.encode_vlm_images(warm), encoders.encode_vision_images(warm)
    timer.seconds = 0.0

    start = time.perf_counter()
    indexed = 0
    while True:
        done, failed = embed_batch(space, encoders, batch_size)
        assert failed == 0
        if done == 0:
            break
        indexed += done
    index_s = time.perf_counter() - start
    assert indexed == len(photo_paths)
    library.delete()  # the next profile's space must see only its own run's photos as pending
    return {
        "profile": profile, "photos": len(photo_paths), "import_per_s": len(photo_paths) / import_s,
        "renditions_per_s": len(photo_paths) / renditions_s, "index_per_s": indexed / index_s,
        "forward_s": timer.seconds, "index_s": index_s, "outside_share": 1 - timer.seconds / index_s,
        "load_s": load_s, "batch": batch_size, "threads": __import__("torch").get_num_threads(),
    }


RENDITION_PATHS = (
    # (label, engine, batched)
    ("Pillow, one photo at a time (before)", "pillow", False),
    ("libvips, one photo at a time", "libvips", False),
    ("libvips, batched task", "libvips", True),
    ("Pillow, batched task", "pillow", True),
)


def bench_renditions(photo_paths: list[Path], rounds: int) -> list[dict]:
    """Photos/s of each rendition path on the same photos, rounds interleaved (the machine's
    load drifts; each path sees the same drift), median per path."""
    import statistics

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.storage import default_storage

    from assets.ingest import ingest_file
    from assets.models import Asset, Library, Rendition
    from assets.rendition_batches import render_pending
    from assets.renditions import make_renditions, new_claim

    user, _ = get_user_model().objects.get_or_create(username="bench-renditions")
    library = Library.objects.create(name="bench renditions", owner=user)
    for path in photo_paths:
        with path.open("rb") as handle:
            assert ingest_file(library, handle, path.name, uploaded_by=user).status == "stored"
    ids = list(library.assets.order_by("pk").values_list("pk", flat=True))

    def reset() -> None:
        for name in Rendition.objects.filter(asset__library=library).values_list("file", flat=True):
            default_storage.delete(name)
        Rendition.objects.filter(asset__library=library).delete()
        library.assets.update(status=Asset.Status.PENDING, renditions_claim="", renditions_claimed_at=None)

    rates: dict[str, list[float]] = {label: [] for label, _, _ in RENDITION_PATHS}
    for _ in range(rounds):
        for label, engine, batched in RENDITION_PATHS:
            reset()
            settings.CLETIR_RENDITION_ENGINE = engine
            start = time.perf_counter()
            if batched:
                made = render_pending(new_claim(), seconds=float("inf")).made
            else:
                made = sum(bool(make_renditions(asset_id)) for asset_id in ids)
            seconds = time.perf_counter() - start
            assert made == len(ids) and not library.assets.exclude(status=Asset.Status.READY).exists(), label
            rates[label].append(len(ids) / seconds)
    settings.CLETIR_RENDITION_ENGINE = "libvips"
    library.delete()
    baseline = statistics.median(rates[RENDITION_PATHS[0][0]])
    return [{"path": label, "per_s": statistics.median(rates[label]), "runs": rates[label],
             "ratio": statistics.median(rates[label]) / baseline} for label, _, _ in RENDITION_PATHS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--profiles", default="tiny,default-random")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rendition-photos", type=int, default=24, help="4000x3000 JPEGs for the rendition comparison (0: skip it)")
    parser.add_argument("--rendition-rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from cletir_site.embedded_postgres import start_configured
    from retrieval.engine.build_models import build_profile

    start_configured()  # the embedded Postgres, when DATABASE_URL is unset
    setup_test_environment()
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-"))
    settings.MEDIA_ROOT = workdir / "media"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from cletir_site.celery import app

    # Nothing is queued from the benchmark: stages are called directly, one after the other.
    app.conf.task_always_eager = True
    from assets.tasks import render_pending_photos
    from retrieval.indexing.tasks import index_space

    index_space.delay = render_pending_photos.delay = lambda *a, **k: None
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    try:
        rendition_rows = []
        if args.rendition_photos:
            camera_dir = workdir / "camera"
            camera_dir.mkdir()
            t0 = time.perf_counter()
            camera = make_photos(camera_dir, args.rendition_photos, size=(4000, 3000))
            print(f"generated {len(camera)} photos (4000x3000 JPEG) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            rendition_rows = bench_renditions(camera, args.rendition_rounds)
        rows = []
        profiles = [p for p in args.profiles.split(",") if p]
        if profiles:
            photos_dir = workdir / "photos"
            photos_dir.mkdir()
            t0 = time.perf_counter()
            paths = make_photos(photos_dir, args.photos)
            print(f"generated {len(paths)} photos (1600x1200 JPEG) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for profile in profiles:
            build_profile(profile)  # random-weight models: built once, kept in CLETIR_MODEL_DIR
            rows.append(bench_profile(profile, paths, args.batch))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(workdir, ignore_errors=True)

    if rendition_rows:
        print(f"\nRenditions of {args.rendition_photos} 4000x3000 JPEGs (1600 px JPEG preview + 320 px WebP "
              f"thumbnail), median of {args.rendition_rounds} interleaved rounds:\n")
        print("| path | photos/s | vs Pillow | rounds |")
        print("|---|---:|---:|---|")
        for r in rendition_rows:
            print(f"| {r['path']} | {r['per_s']:.1f} | **{r['ratio']:.2f}x** | {', '.join(f'{x:.1f}' for x in r['runs'])} |")
        print(f"\nbatched task: {settings.CLETIR_RENDITION_BATCH_SIZE} photos per claim, "
              f"{settings.CLETIR_RENDITION_THREADS} threads; CPU cores {os.cpu_count()}")
    if not rows:
        return
    print(f"\n| profile | photos | import photos/s | thumbnails photos/s | index photos/s | forward share | outside forward | model load s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['photos']} | {r['import_per_s']:.1f} | {r['renditions_per_s']:.1f} | "
              f"{r['index_per_s']:.1f} | {1 - r['outside_share']:.0%} | **{r['outside_share']:.0%}** | {r['load_s']:.1f} |")
    print(f"\nbatch {rows[0]['batch']}, torch threads {rows[0]['threads']}, CPU cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
