"""Ingest benchmark: photos/s for importing and for indexing generated photos, where indexing
time goes (a stage table), and the share of it spent outside the models' forward passes.

    .venv/bin/python bench/ingest.py [--photos 200] [--profiles tiny,default-random]
        [--device cpu|cuda] [--photo-size 1600x1200[,4000x3000]] [--batch N] [--prefetch 2]
        [--threads N] [--engine-only] [--claim-store N] [--rendition-photos 24 --rendition-rounds 3]

Photos are generated JPEGs with smooth structure and noise (camera-like sizes and compression),
written to a folder first, as `import_folder` would read them. Three modes:

* default, the whole path through the real database (a throw-away database of the project's
  Postgres, created and dropped here, and a temporary media folder):
  - import: `ingest_file` per photo (hash, validation, store, rows); thumbnails are a separate
    stage on the `default` queue and are timed apart;
  - index: the `index_space` task's body (`index_pending_photos`: claims, the pipeline, binary
    COPY stores) into a new space, as a re-index fills it.
* `--engine-only`: read -> decode -> preprocess -> embed from the files on disk through the same
  pipeline (retrieval.engine.photo_pipeline), with no database and no Django: what a GPU machine
  without the web stack can run.
* `--rendition-photos N`: renditions of N 12-megapixel (4000x3000) camera-like JPEGs, the Pillow
  path and the libvips path side by side in one run (rounds interleaved, the median of each
  reported; a photo's 1600 px JPEG preview and 320 px WebP thumbnail, files and rows included):
  one photo at a time (`make_renditions`, what the per-photo task did) with each engine, and the
  batched task path (`render_pending`: claims, CLETIR_RENDITION_THREADS threads, files, rows).
  With `--profiles ""` this part runs alone.
* `--claim-store N`: the database path on its own: N photo rows, claimed and stored batch by
  batch with planted 896-d vectors (no files, no models), into a space being filled (no vector
  index yet: a backfill) and into a space whose HNSW index exists (new photos of a complete
  space).

The forward passes of the two encoders are timed by wrapping exactly the modules that run them
(open_clip `encode_image`, the DINOv2 model; on CUDA, by CUDA events around each batch's passes);
"outside" is everything else. The stage table: read, decode and preprocess are seconds summed
over the preparing threads (they overlap the rest); prepare wait is the time the encoders'
thread waited for a prepared batch, take and store its database time (claims, binary COPY);
idle is the wall time the accelerator (or, on a CPU, the forward passes) was not busy.

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
        noise = rng.normal(0, 10, (size[1], size[0], 3)).astype(np.float32).astype(np.int16)
        pixels = np.asarray(coarse, dtype=np.int16) + noise
        path = folder / f"photo_{size[0]}x{size[1]}_{i:05d}.jpg"
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


def load_timed_encoders(profile: str, device: str):
    """The profile's encoders on `device`, warmed up, with their forward passes timed (CPU)."""
    from PIL import Image

    from retrieval.engine.encoders import load_encoders

    encoders = load_encoders(profile, device=device)
    timer = ForwardTimer()
    if encoders.device.type == "cpu":  # on CUDA the passes are asynchronous: CUDA events time them
        encoders._vlm.encode_image = timer.wrap(encoders._vlm.encode_image)
        encoders._vision.forward = timer.wrap(encoders._vision.forward)
    # Warm-up outside the timing (first-call allocations, oneDNN / cuDNN kernel selection).
    warm = [Image.new("RGB", (640, 480), "gray")] * 2
    encoders.encode_photos(warm)
    timer.seconds = 0.0
    return encoders, timer


def warm_up_photo_path(encoders, photo_paths: list[Path], threads: int) -> None:
    """One batch through the preparer and the encoders, untimed (nvJPEG and kernel set-up)."""
    preparer = encoders.photo_preparer(threads)
    try:
        encoders.encode_prepared(preparer.prepare(photo_paths[:4]))
    finally:
        preparer.close()


def forward_seconds(encoders, timer: ForwardTimer, clock) -> float:
    """Seconds the forward passes kept the device busy."""
    return clock.gpu_busy_seconds() if encoders.device.type == "cuda" else timer.seconds


STAGES = [("read", "read (threads)"), ("decode", "decode (threads)"), ("preprocess", "preprocess (threads)"),
          ("prepare_wait", "waiting for a prepared batch"), ("take", "take (claim)"), ("store", "store (write)")]


def stage_rows(label: str, clock, wall: float, busy: float) -> list[str]:
    seconds = clock.seconds
    rows = [f"| {label} | {name} | {seconds.get(key, 0.0):.2f} | {seconds.get(key, 0.0) / wall:.0%} |"
            for key, name in STAGES if key in seconds]
    rows.append(f"| {label} | forward passes (busy) | {busy:.2f} | {busy / wall:.0%} |")
    rows.append(f"| {label} | **idle accelerator** | {wall - busy:.2f} | **{(wall - busy) / wall:.0%}** |")
    return rows


def bench_engine_only(profile: str, photo_paths: list[Path], device: str, batch_size: int, prefetch: int,
                      threads: int) -> dict:
    """read -> decode -> preprocess -> embed through the engine's pipeline, no database."""
    from retrieval.engine.fusion import photo_vectors
    from retrieval.engine.photo_pipeline import PipelineClock, embed_batches

    encoders, timer = load_timed_encoders(profile, device)
    warm_up_photo_path(encoders, photo_paths, threads)
    timer.seconds = 0.0
    batches = [photo_paths[i:i + batch_size] for i in range(0, len(photo_paths), batch_size)]
    done = {"photos": 0}

    def store(paths, prepared, features):
        done["photos"] += len(photo_vectors(*features))

    clock = PipelineClock()
    preparer = encoders.photo_preparer(threads)
    start = time.perf_counter()
    try:
        embed_batches(encoders, preparer, lambda: batches.pop(0) if batches else [], str, store,
                      prefetch=prefetch, deadline=float("inf"), clock=clock)
        wall = time.perf_counter() - start
    finally:
        preparer.close()
    assert done["photos"] == len(photo_paths)
    busy = forward_seconds(encoders, timer, clock)
    return {"photos": len(photo_paths), "per_s": len(photo_paths) / wall, "wall": wall, "busy": busy,
            "clock": clock, "decoder": preparer.decoder}


def bench_profile(profile: str, photo_paths: list[Path], device: str, batch_size: int | None, prefetch: int,
                  threads: int) -> dict:
    from django.contrib.auth import get_user_model

    from assets.ingest import ingest_file
    from assets.models import Library
    from assets.rendition_batches import render_pending
    from assets.renditions import new_claim
    from retrieval.indexing.claims import Lease
    from retrieval.indexing.photos import index_pending_photos
    from retrieval.indexing.spaces import space_for_profile
    from retrieval.indexing.tasks import index_batch_size

    user, _ = get_user_model().objects.get_or_create(username=f"bench-{profile}")
    library = Library.objects.create(name=f"bench {profile} {photo_paths[0].stem}", owner=user)

    start = time.perf_counter()
    for path in photo_paths:
        with path.open("rb") as handle:
            outcome = ingest_file(library, handle, path.name, uploaded_by=user)
        assert outcome.status == "stored", outcome
    import_s = time.perf_counter() - start

    start = time.perf_counter()
    render_pending(new_claim(), seconds=float("inf"))  # the batched rendition task's body
    renditions_s = time.perf_counter() - start

    load_start = time.perf_counter()
    encoders, timer = load_timed_encoders(profile, device)
    space = space_for_profile(profile)
    load_s = time.perf_counter() - load_start
    batch_size = batch_size or index_batch_size(encoders.device)
    warm_up_photo_path(encoders, photo_paths, threads)
    timer.seconds = 0.0

    start = time.perf_counter()
    run = index_pending_photos(space, encoders, Lease.new(), batch_size=batch_size, prefetch=prefetch,
                               threads=threads, deadline=float("inf"))
    index_s = time.perf_counter() - start
    assert (run.indexed, run.failed, run.finished) == (len(photo_paths), 0, True), run
    busy = forward_seconds(encoders, timer, run.clock)
    library.delete()  # the next run's space must see only its own photos as pending
    return {
        "profile": profile, "photos": len(photo_paths), "import_per_s": len(photo_paths) / import_s,
        "renditions_per_s": len(photo_paths) / renditions_s, "index_per_s": run.indexed / index_s,
        "wall": index_s, "busy": busy, "outside_share": 1 - busy / index_s, "clock": run.clock,
        "load_s": load_s, "batch": batch_size,
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



def bench_claim_store(count: int, batch_size: int) -> list[dict]:
    """Vectors/s of the database path alone (claim + store), with planted vectors and no files:
    a space filled with `count` photos (no vector index yet, as a backfill runs), its HNSW index
    built over them, then new photos stored into the indexed space."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from assets.models import Asset, Library
    from retrieval.indexing import claims
    from retrieval.indexing.vector_index import ensure_space_index
    from retrieval.models import EmbeddingSpace

    user, _ = get_user_model().objects.get_or_create(username="bench-claims")
    library = Library.objects.create(name="bench claims", owner=user)
    space = EmbeddingSpace.objects.create(name="planted", profile="planted", vlm_model="-", vision_model="-",
                                          generator_model="-", vlm_dim=512, vision_dim=384, fingerprint="planted")
    rng = np.random.default_rng(0)

    def add_photos(first: int, n: int) -> None:
        Asset.objects.bulk_create([Asset(library=library, file=f"x/{i}.jpg", sha256=f"{i:064x}",
                                         status=Asset.Status.READY) for i in range(first, first + n)], batch_size=5000)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    def claim_and_store(label: str, n: int) -> dict:
        lease, written, after, take_s, store_s = claims.Lease.new(), 0, 0, 0.0, 0.0
        start = time.perf_counter()
        while written < n:
            t0 = time.perf_counter()
            batch = claims.claim_fresh(space, lease, batch_size, after)
            t1 = time.perf_counter()
            if not batch:
                break
            after = batch[-1].asset_id
            vectors = rng.standard_normal((len(batch), space.dim)).astype(np.float32)
            written += len(claims.store(space, lease, [p.asset_id for p in batch], vectors, {}).indexed)
            take_s, store_s = take_s + t1 - t0, store_s + time.perf_counter() - t1
        wall = time.perf_counter() - start
        return {"label": label, "vectors": written, "per_s": written / wall, "take_s": take_s, "store_s": store_s}

    add_photos(0, count)
    rows = [claim_and_store(f"backfill of a space (no vector index yet), {count} photos", count)]
    start = time.perf_counter()
    ensure_space_index(space)
    build_s = time.perf_counter() - start
    new = 2 * batch_size
    add_photos(count, new)
    rows.append(claim_and_store(f"new photos into its HNSW index ({count} vectors; built in {build_s:.1f} s)", new))
    space.delete()
    library.delete()
    return rows


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        width, _, height = part.lower().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--profiles", default="tiny,default-random")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--photo-size", default="1600x1200", help="WxH of the generated JPEGs, comma-separated")
    parser.add_argument("--batch", type=int, default=0, help="photos per batch (0: the product's default for the device)")
    parser.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead (CLETIR_INDEX_PREFETCH)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="decoding threads (CLETIR_INDEX_DECODE_THREADS)")
    parser.add_argument("--engine-only", action="store_true", help="read -> embed from files, no database")
    parser.add_argument("--claim-store", type=int, default=0, metavar="N", help="the database path alone on N photo rows")
    parser.add_argument("--rendition-photos", type=int, default=24, help="4000x3000 JPEGs for the rendition comparison (0: skip it)")
    parser.add_argument("--rendition-rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["CLETIR_DEVICE"] = args.device  # the indexing space's encoders run there too
    sizes = parse_sizes(args.photo_size)
    profiles = [p for p in args.profiles.split(",") if p]
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-"))
    try:
        if args.claim_store:
            with test_database(workdir):
                rows = bench_claim_store(args.claim_store, args.batch or 256)
            print_claim_store(rows, args.batch or 256)
            return
        if args.rendition_photos and not args.engine_only:
            camera_dir = workdir / "camera"
            camera_dir.mkdir()
            t0 = time.perf_counter()
            camera = make_photos(camera_dir, args.rendition_photos, (4000, 3000))
            print(f"generated {len(camera)} photos (4000x3000 JPEG) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            with test_database(workdir):
                print_renditions(bench_renditions(camera, args.rendition_rounds), args)
        if not profiles:
            return
        photos = {}
        for size in sizes:
            folder = workdir / f"photos-{size[0]}x{size[1]}"
            folder.mkdir()
            t0 = time.perf_counter()
            photos[size] = make_photos(folder, args.photos, size)
            print(f"generated {args.photos} photos ({size[0]}x{size[1]} JPEG) in {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
        from retrieval.engine.build_models import build_profile

        for profile in profiles:
            build_profile(profile)  # random-weight models: built once, kept in CLETIR_MODEL_DIR
        if args.engine_only:
            rows = [{"profile": p, "size": s, **bench_engine_only(p, photos[s], args.device, args.batch or
                                                                   (256 if args.device == "cuda" else 32),
                                                                   args.prefetch, args.threads)}
                    for p in profiles for s in sizes]
            print_engine_only(rows, args)
        else:
            with test_database(workdir):
                rows = [{"size": s, **bench_profile(p, photos[s], args.device, args.batch, args.prefetch, args.threads)}
                        for p in profiles for s in sizes]
            print_full(rows, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class test_database:
    """A throw-away database of the project's Postgres and a temporary media folder; nothing is
    queued (stages are called directly)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def __enter__(self):
        import django

        django.setup()
        from django.conf import settings
        from django.db import connection
        from django.test.utils import setup_test_environment

        from cletir_site.embedded_postgres import start_configured

        start_configured()  # the embedded Postgres, when DATABASE_URL is unset
        setup_test_environment()
        settings.MEDIA_ROOT = self.workdir / "media"
        from assets.tasks import render_pending_photos
        from retrieval.indexing.tasks import index_space

        index_space.delay = render_pending_photos.delay = lambda *a, **k: None
        self.connection, self.old_name = connection, connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0)
        return self

    def __exit__(self, *exc) -> None:
        self.connection.creation.destroy_test_db(self.old_name, verbosity=0)


def environment(args) -> str:
    import torch

    return (f"device {args.device}, torch threads {torch.get_num_threads()}, decoding threads {args.threads}, "
            f"prefetch {args.prefetch}, CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")


def print_full(rows: list[dict], args) -> None:
    print("\n| profile | photos | size | import photos/s | thumbnails photos/s | index photos/s | forward share "
          "| outside forward | batch | model load s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['photos']} | {r['size'][0]}x{r['size'][1]} | {r['import_per_s']:.1f} | "
              f"{r['renditions_per_s']:.1f} | {r['index_per_s']:.1f} | {1 - r['outside_share']:.0%} | "
              f"**{r['outside_share']:.0%}** | {r['batch']} | {r['load_s']:.1f} |")
    print_stages(rows)
    print(f"\n{environment(args)}")


def print_engine_only(rows: list[dict], args) -> None:
    print("\n| profile | photos | size | decoder | engine photos/s | forward share |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['photos']} | {r['size'][0]}x{r['size'][1]} | {r['decoder']} | "
              f"{r['per_s']:.1f} | {r['busy'] / r['wall']:.0%} |")
    print_stages(rows)
    print(f"\n{environment(args)}")


def print_stages(rows: list[dict]) -> None:
    print("\n| run | stage | seconds | share of wall |")
    print("|---|---|---|---|")
    for r in rows:
        label = f"{r['profile']} {r['size'][0]}x{r['size'][1]} ({r['wall']:.1f} s)"
        print("\n".join(stage_rows(label, r["clock"], r["wall"], r["busy"])))


def print_renditions(rows: list[dict], args) -> None:
    from django.conf import settings

    print(f"\nRenditions of {args.rendition_photos} 4000x3000 JPEGs (1600 px JPEG preview + 320 px WebP "
          f"thumbnail), median of {args.rendition_rounds} interleaved rounds:\n")
    print("| path | photos/s | vs Pillow | rounds |")
    print("|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['path']} | {r['per_s']:.1f} | **{r['ratio']:.2f}x** | {', '.join(f'{x:.1f}' for x in r['runs'])} |")
    print(f"\nbatched task: {settings.CLETIR_RENDITION_BATCH_SIZE} photos per claim, "
          f"{settings.CLETIR_RENDITION_THREADS} threads; CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")


def print_claim_store(rows: list[dict], batch: int) -> None:
    print("\n| database path (claim + store, binary COPY) | vectors | vectors/s | claim s | store s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['vectors']} | **{r['per_s']:.0f}** | {r['take_s']:.2f} | {r['store_s']:.2f} |")
    print(f"\nbatch {batch}, CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
