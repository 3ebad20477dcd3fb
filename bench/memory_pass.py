"""The memory backend's ranking pass with each product dtype, side by side, on this machine.

    .venv/bin/python bench/memory_pass.py [--sizes 100000,300000] [--queries 30] [--threads N]

A copy of planted 896-d vectors (two unit-norm halves, 10 libraries) is built straight on the
CPU (no database), and each query ranks every library's photos, top 1000, exactly
(`memory.rank_copy`): the fast pass over the float16 rows, or over their bfloat16 twin, then
the exact scores of every photo the pass's error bound could misplace. The table gives per
size and product: the pass's error bound, the photos scored exactly, the ranking's median and
95th percentile, whether both products gave the same rows (they must), and the copy's size.
The product the backend would pick on this machine (`memory.product_dtype`) is printed first.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings_test")

VLM_DIM, VISION_DIM, TOP_N = 512, 384, 1000


def planted(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((size, VLM_DIM + VISION_DIM)).astype(np.float32)
    for half in (slice(0, VLM_DIM), slice(VLM_DIM, None)):
        vectors[:, half] /= np.linalg.norm(vectors[:, half], axis=1, keepdims=True)
    return vectors, rng.integers(1, 11, size)


def build_copy(vectors: np.ndarray, libraries: np.ndarray, product):
    import torch

    from retrieval.search.ranking import memory

    memory._product_dtypes["cpu"] = product
    space = type("PlantedSpace", (), {"pk": 0, "dim": vectors.shape[1], "vlm_dim": VLM_DIM})()
    copy = memory.SpaceCopy(space, torch.device("cpu"), capacity=len(vectors))
    copy._write(np.arange(len(vectors)), np.arange(1, len(vectors) + 1), libraries.astype(np.int64),
                np.ones(len(vectors), dtype=bool), vectors.astype(np.float16))
    copy.rows = len(vectors)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import django

    django.setup()
    import torch

    from retrieval.search.ranking import memory
    from retrieval.search.ranking.scope import Scope

    if args.threads:
        torch.set_num_threads(args.threads)
    picked = memory.product_dtype(torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; the backend picks a {str(picked).replace('torch.', '')} "
          f"product here\n")
    print("| photos | product | error bound | scored exactly | p50 ms | p95 ms | same rows | copy MB |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        vectors, libraries = planted(size)
        rng = np.random.default_rng(1)
        raw = rng.standard_normal((args.queries, vectors.shape[1])).astype(np.float32)
        queries = [q / np.linalg.norm(q) for q in raw]
        scope = Scope(tuple(range(1, 11)))
        answers = {}
        for product in (torch.float16, torch.bfloat16):
            copy = build_copy(vectors, libraries, product)
            for u in queries[:3]:
                memory.rank_copy(copy, u, scope, TOP_N)  # warm-up: kernels, the gather buffer
            times, rows, candidates, errors = [], [], [], []
            for u in queries:
                started = time.perf_counter()
                ranking = memory.rank_copy(copy, u, scope, TOP_N)
                times.append(time.perf_counter() - started)
                rows.append(ranking.asset_ids.tolist())
                scores = copy.scores(u, scope)
                best = scores.top(TOP_N)[1][-1]
                candidates.append(scores.count_above(float(best) - 2 * scores.error))
                errors.append(scores.error)
            answers[product] = rows
            same = "–" if product == torch.float16 else ("yes" if rows == answers[torch.float16] else "NO")
            print(f"| {size:,} | {str(product).replace('torch.', '')} | {np.median(errors):.5f} | "
                  f"{int(np.median(candidates)):,} | {np.median(times) * 1000:.1f} | "
                  f"{np.percentile(times, 95) * 1000:.1f} | {same} | {copy.nbytes / 2**20:.0f} |")
    memory._product_dtypes.clear()


if __name__ == "__main__":
    main()
