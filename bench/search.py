"""Search benchmark: the pgvector HNSW ranking at 10k and 100k photos, and one whole search.

    .venv/bin/python bench/search.py [--sizes 10000,100000] [--queries 50]
        [--m 16] [--ef-construction 64] [--no-search]

Runs on a throw-away database of the project's Postgres (created and dropped here).

Ranking: planted fused photo vectors e = [I(x); V(x)] with the `default` profile's dims
(512 + 384 = 896, each half unit-norm) are loaded with binary COPY, then the space's HNSW
index is built (timed). The vectors are clustered like real ones: 200 categories, each half is
a shared direction (the anisotropy of CLIP / DINOv2 features) + the category's direction +
per-photo noise; a query is u = [(1-λ)t; λq] with a text vector t in its own region (the
modality gap) and a proxy vector q near its category, λ = 0.5. The photos sit in 10 libraries
of 10% each. Every query goes through `retrieval.search.ranking.rank` exactly as a search does (the
join on assets, the library filter, the score parts), timed around the call:

* "all libraries": top 100 over every library; recall@100 against `rank(exact=True)`;
* "1 library (10%)": the same through the library filter (iterative index scan): rows returned
  and recall against the exact filtered ranking;
* "top 1000": what a search stores by default (CLETIR_SEARCH_TOP_N), recall@1000;
* "exact scan": `rank(exact=True)`, the baseline.

Whole search: the `run_search` task body with the full-size random-weight `default-random`
models on this CPU, over the 100k planted photos (the space is the real one of that profile):
models loaded once (a worker does this once per process), then a cold search (generates its
proxies), repeated queries (cached proxies and text, median of REPEATS), and a new worker's view
of a cached query (cached proxies, text encoded). Stage seconds are the task's own `Search.timings`; "store" and
"total" end after the commit that makes the results readable; "task wall" also counts the match
count that follows.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VLM_DIM, VISION_DIM = 512, 384  # the `default` profile: ViT-B-32 + DINOv2-small
CATEGORIES = 200
LIBRARIES = 10
LAMBDA = 0.5
PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds (binary timestamptz)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class PlantedData:
    """Clustered photo vectors and matching queries (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.shared_i, self.shared_v, self.text_region = (_unit(self.rng.standard_normal(d)) for d in (VLM_DIM, VISION_DIM, VLM_DIM))
        self.centres_i = _unit(self.rng.standard_normal((CATEGORIES, VLM_DIM)))
        self.centres_v = _unit(self.rng.standard_normal((CATEGORIES, VISION_DIM)))

    def _noise(self, n: int, d: int) -> np.ndarray:
        return self.rng.standard_normal((n, d)) / np.sqrt(d)  # norm ~1 per row

    def photos(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, 896) float16, category per photo)."""
        cats = self.rng.integers(0, CATEGORIES, n)
        out = np.empty((n, VLM_DIM + VISION_DIM), dtype=np.float16)
        for start in range(0, n, 20_000):  # bounded float64 temporaries
            c = cats[start:start + 20_000]
            m = len(c)
            i_half = _unit(0.6 * self.shared_i + 0.6 * self.centres_i[c] + 0.5 * self._noise(m, VLM_DIM))
            v_half = _unit(0.4 * self.shared_v + 0.7 * self.centres_v[c] + 0.6 * self._noise(m, VISION_DIM))
            out[start:start + m] = np.concatenate([i_half, v_half], axis=1)
        return out, cats

    def queries(self, count: int) -> np.ndarray:
        """(count, 896) float32 query vectors u = [(1-λ)t; λq]."""
        cats = self.rng.integers(0, CATEGORIES, count)
        t = _unit(0.7 * self.text_region + 0.5 * self.centres_i[cats] + 0.3 * self._noise(count, VLM_DIM))
        q = _unit(0.4 * self.shared_v + 0.8 * self.centres_v[cats] + 0.3 * self._noise(count, VISION_DIM))
        return np.concatenate([(1 - LAMBDA) * t, LAMBDA * q], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- loading


def copy_assets(cursor, first_id: int, library_ids: np.ndarray) -> None:
    """Asset rows with explicit ids first_id.. (text COPY: short rows)."""
    from assets.models import Asset

    buffer = io.StringIO()
    for offset, library in enumerate(library_ids):
        pk = first_id + offset
        buffer.write(f"{pk}\t{int(library)}\tbench/{pk}.jpg\t\t{pk:064x}\t0\t\tready\t\t2026-01-01 00:00:00+00\n")
    columns = "id, library_id, file, original_name, sha256, size_bytes, format, status, error, created_at"
    with cursor.copy(f'COPY "{Asset._meta.db_table}" ({columns}) FROM STDIN') as copy:
        copy.write(buffer.getvalue())
    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{Asset._meta.db_table}', 'id'), %s)",
                   [first_id + len(library_ids)])


def copy_embeddings(cursor, space_id: int, asset_ids: np.ndarray, vectors: np.ndarray) -> None:
    """AssetEmbedding rows by binary COPY: halfvec's wire format is (int16 dim, int16 0,
    big-endian float16 × dim), so the rows are one numpy structured array, no text formatting."""
    from retrieval import binary_copy
    from retrieval.models import AssetEmbedding

    dim = vectors.shape[1]
    halfvec = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f2", (dim,))])
    row = binary_copy.row_type([("asset", ">i8"), ("space", ">i8"), ("vector", halfvec), ("created", ">i8")])
    created = int(time.time() * 1_000_000) - PG_EPOCH_US
    sql = f'COPY "{AssetEmbedding._meta.db_table}" (asset_id, space_id, vector, created_at) FROM STDIN WITH (FORMAT binary)'
    with cursor.copy(sql) as copy:
        copy.write(binary_copy.HEADER)
        for start in range(0, len(asset_ids), 10_000):
            part = slice(start, start + 10_000)
            rows = binary_copy.new_rows(row, len(asset_ids[part]))
            rows["asset"], rows["space"], rows["created"] = asset_ids[part], space_id, created
            rows["vector"]["dim"], rows["vector"]["values"] = dim, vectors[part]
            copy.write(rows.tobytes())
        copy.write(binary_copy.TRAILER)


# ---------------------------------------------------------------------------- measuring


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def recall(approx: list, exact: list) -> float:
    return len({r.asset_id for r in approx} & {r.asset_id for r in exact}) / max(1, len(exact))


def bench_size(size: int, space, libraries: list[int], data: PlantedData, queries: int, m: int,
               ef_construction: int, first_id: int) -> tuple[list[dict], dict]:
    from django.db import connection

    from retrieval.search.ranking import explain, rank
    from retrieval.indexing.vector_index import ensure_space_index, index_name

    vectors, _ = data.photos(size)
    asset_ids = np.arange(first_id, first_id + size, dtype=np.int64)
    library_of = np.asarray(libraries)[data.rng.integers(0, len(libraries), size)]
    start = time.perf_counter()
    with connection.cursor() as cursor:
        copy_assets(cursor.cursor, first_id, library_of)
        copy_embeddings(cursor.cursor, space.pk, asset_ids, vectors)
    load_s = time.perf_counter() - start
    with connection.cursor() as cursor:
        # What a bulk load is followed by: without it, the first queries write hint bits on
        # every page they touch and autovacuum starts in the middle of the measurements.
        cursor.execute("VACUUM (ANALYZE)")
    with connection.cursor() as cursor:
        # The graph must fit in maintenance_work_mem or the build slows down many times over.
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {max(1, (os.cpu_count() or 2) - 1)}")
    _, build_ms = timed(lambda: ensure_space_index(space, m=m, ef_construction=ef_construction))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_relation_size(%s)", [index_name(space)])
        index_mb = cursor.fetchone()[0] / 1e6

    qs = data.queries(queries)
    one_library = [libraries[0]]
    for u in qs[:5]:  # warm the caches (index pages, plans)
        rank(space, u, libraries, 100)
        rank(space, u, one_library, 100)
        rank(space, u, libraries, 100, exact=True)
    # method None: what a search does (exact for scopes of at most CLETIR_EXACT_RANK_MAX_ROWS
    # photos, the graph above); False: always the graph, to show what it does on its own.
    cases = {
        "all libraries, top 100, HNSW": (libraries, 100, False),
        "all libraries, top 100, as searched": (libraries, 100, None),
        "1 library (10%), top 100, HNSW": (one_library, 100, False),
        "1 library (10%), top 100, as searched": (one_library, 100, None),
        "all libraries, top 1000, as searched": (libraries, 1000, None),
    }
    rows = []
    exact_ms = []
    for label, (libs, n, method) in cases.items():
        latencies, recalls, returned = [], [], []
        for u in qs:
            approx, ms = timed(lambda: rank(space, u, libs, n, exact=method))
            exact, ems = timed(lambda: rank(space, u, libs, n, exact=True))
            if label == "all libraries, top 100, HNSW":
                exact_ms.append(ems)
            latencies.append(ms)
            recalls.append(recall(approx, exact))
            returned.append(len(approx) / max(1, len(exact)))
        plan = explain(space, qs[0], libs, n, exact=method)
        rows.append({
            "size": size, "case": label, "p50": np.percentile(latencies, 50), "p95": np.percentile(latencies, 95),
            "recall": float(np.mean(recalls)), "returned": float(np.min(returned)),
            "index": index_name(space) in plan,
        })
    rows.append({"size": size, "case": "exact scan, all libraries, top 100", "p50": np.percentile(exact_ms, 50),
                 "p95": np.percentile(exact_ms, 95), "recall": 1.0, "returned": 1.0, "index": False})
    build = {"size": size, "load_s": load_s, "build_s": build_ms / 1000, "index_mb": index_mb}
    return rows, build


# ---------------------------------------------------------------------------- whole search


STAGES = ["text", "proxies_lookup", "generation", "proxy_embedding", "aggregation", "ranking", "store", "total"]


REPEATS = 7


def bench_whole_search(user, libraries: list[int]) -> tuple[float, list[tuple[str, dict, float]]]:
    """(model load seconds, [(label, stage seconds, task wall ms)]); the repeated searches'
    figures are medians over REPEATS runs."""
    from retrieval.search import inputs as search_inputs
    from retrieval.engine.encoders import load_encoders
    from retrieval.engine.generator import load_generator
    from retrieval.models import Search
    from retrieval.search.tasks import run_search

    start = time.perf_counter()
    load_encoders("default-random")
    load_generator("default-random")
    load_s = time.perf_counter() - start

    def search(text: str) -> tuple[dict, float]:
        row = Search.objects.create(user=user, text=text, k=4, seed=0, top_n=1000)
        _, ms = timed(lambda: run_search(row.pk))
        row.refresh_from_db()
        assert row.status == Search.Status.DONE and row.result_count == 1000, (row.status, row.error)
        return row.timings, ms

    def median(runs: list[tuple[dict, float]]) -> tuple[dict, float]:
        stages = {k: float(np.median([t[k] for t, _ in runs])) for k in STAGES if k in runs[0][0]}
        return stages, float(np.median([ms for _, ms in runs]))

    rows = [("cold: proxies generated", *search("golden retriever"))]
    # Both spellings normalise to the same query: the second reuses the first one's proxies.
    repeats = [search("golden retriever" if i % 2 else "Golden  Retriever") for i in range(REPEATS)]
    rows.append((f"cached proxies + text (median of {REPEATS})", *median(repeats)))
    search_inputs.text_vectors.clear()
    rows.append(("cached proxies, text encoded (a new worker)", *search("golden retriever")))
    return load_s, rows


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--m", type=int, default=None, help="HNSW m (default: vector_index's)")
    parser.add_argument("--ef-construction", type=int, default=None, help="HNSW ef_construction (default: vector_index's)")
    parser.add_argument("--no-search", action="store_true", help="skip the whole search with default-random")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import setup_test_environment

    from assets.models import Library
    from cletir_site.embedded_postgres import start_configured
    from retrieval.engine.build_models import build_profile
    from retrieval.models import EmbeddingSpace
    from retrieval.search.ranking import ef_search_for
    from retrieval.indexing.vector_index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M

    start_configured()  # the embedded Postgres, when DATABASE_URL is unset
    m = args.m or DEFAULT_M
    ef_construction = args.ef_construction or DEFAULT_EF_CONSTRUCTION
    setup_test_environment()
    workdir = Path(tempfile.mkdtemp(prefix="cletir-bench-search-"))
    settings.MEDIA_ROOT = workdir / "media"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    rows, builds, whole = [], [], None
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('shared_buffers'), version()")
        shared_buffers, version = cursor.fetchone()
    try:
        user = get_user_model().objects.create_user("bench")
        libraries = [Library.objects.create(name=f"library {i}", owner=user).pk for i in range(LIBRARIES)]
        data = PlantedData()
        sizes = [int(s) for s in args.sizes.split(",")]
        first_id = 1
        for size in sizes:
            if size == max(sizes) and not args.no_search:
                # The largest set lives in the real space of default-random, so the whole
                # search below ranks over it.
                from retrieval.indexing.spaces import space_for_profile

                build_profile("default-random")  # built once, kept in CLETIR_MODEL_DIR
                space = space_for_profile("default-random")
                from retrieval.indexing.vector_index import drop_space_index

                drop_space_index(space)  # built below, on the loaded rows, and timed
                EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True)
                assert (space.vlm_dim, space.vision_dim) == (VLM_DIM, VISION_DIM)
            else:
                space = EmbeddingSpace.objects.create(
                    name=f"bench {size}", profile="default", vlm_model="planted", vision_model="planted",
                    generator_model="planted", vlm_dim=VLM_DIM, vision_dim=VISION_DIM, fingerprint=f"bench-{size}",
                )
            t0 = time.perf_counter()
            size_rows, build = bench_size(size, space, libraries, data, args.queries, m, ef_construction, first_id)
            first_id += size
            rows += size_rows
            builds.append(build)
            print(f"{size}: done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        if not args.no_search:
            whole = bench_whole_search(user, libraries)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"\nHNSW m={m}, ef_construction={ef_construction}; ef_search = max({settings.CLETIR_HNSW_EF_SEARCH}, N) "
          f"(top 100: {ef_search_for(100)}, top 1000: {ef_search_for(1000)}), iterative scan relaxed_order, "
          f"{args.queries} queries, {os.cpu_count()} CPU cores, shared_buffers {shared_buffers}, "
          f"{version.split(' on ')[0]}\n")
    print("| photos | COPY load s | index build s | index MB |")
    print("|---|---|---|---|")
    for b in builds:
        print(f"| {b['size']:,} | {b['load_s']:.1f} | {b['build_s']:.1f} | {b['index_mb']:.0f} |")
    print("\n| photos | query | p50 ms | p95 ms | recall vs exact | rows returned / asked | method |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']:,} | {r['case']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['recall']:.3f} | "
              f"{r['returned']:.0%} | {'HNSW' if r['index'] else 'exact'} |")
    for size in sorted({r["size"] for r in rows}):
        by_case = {r["case"]: r for r in rows if r["size"] == size}
        speedup = by_case["exact scan, all libraries, top 100"]["p50"] / by_case["all libraries, top 100, HNSW"]["p50"]
        print(f"\n{size:,} photos: HNSW top-100 p50 is {speedup:.0f}x below the exact scan's")
    if whole:
        load_s, runs = whole
        print(f"\nWhole search (task body, default-random full-size random weights, CPU, 100k photos, top 1000); "
              f"models loaded once per worker in {load_s:.1f}s\n")
        print("| search | " + " | ".join(STAGES) + " | task wall |")
        print("|---|" + "---|" * (len(STAGES) + 1))
        for label, timings, ms in runs:
            cells = []
            for stage in STAGES:
                value = timings.get(stage)
                cells.append("–" if value is None else (f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"))
            print(f"| {label} | " + " | ".join(cells) + f" | {ms:.1f} ms |")


if __name__ == "__main__":
    main()
