"""Ranking a scope by a query vector: the `memory` and `pgvector` backends, and which one runs.

`rank(space, u, scope, top_n)` returns a `Ranking`: the top N rows with exact scores (score
descending, asset id ascending; `retrieval.search.scores`) and the scope's fast scores for the
match count. Both backends give the same rows for an exact ranking; they differ in speed and in
what they hold:

* `memory` (`memory.py`): the worker holds the space's vectors (GPU memory on CUDA, RAM on CPU)
  and ranks exactly with one matrix product; the match count reuses the same scores.
* `pgvector` (`pgvector.py`): one query per ranking, exact for small scopes and through the
  HNSW graph for large ones; the match count scans the scope once more.

CLETIR_RANK_BACKEND chooses: `pgvector`; `memory` (unless the copy would pass
CLETIR_RANK_MEMORY_MB); or `auto` (the default): memory on CUDA workers, and on CPU workers
for spaces of at most CLETIR_RANK_CPU_MAX_PHOTOS photos (where an exact pass still beats the
graph, bench/search.py), pgvector otherwise. The worker logs each choice and reports it on its
heartbeat (/healthz, the admin).
"""
from __future__ import annotations

import logging

import numpy as np
from django.conf import settings

from ...models import EmbeddingSpace
from . import memory, pgvector
from .base import RankedRow, Ranking, ScopeScores
from .scope import Scope

__all__ = ["BACKENDS", "RankedRow", "Ranking", "Scope", "ScopeScores", "choose_backend", "rank", "warm_up"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "memory", "pgvector")

_chosen: dict[int, tuple[str, str]] = {}


def choose_backend(space: EmbeddingSpace) -> str:
    """The backend this process ranks `space` with now (see the module docstring); logged and
    reported when it changes."""
    setting = settings.CLETIR_RANK_BACKEND
    if setting not in BACKENDS:
        raise ValueError(f"CLETIR_RANK_BACKEND must be one of {', '.join(BACKENDS)}, got {setting!r}")
    from ...workers import report_ranking  # imported here: workers imports this wing

    backend, reason = _decide(space, setting)
    if _chosen.get(space.pk) != (backend, reason):
        _chosen.clear()
        _chosen[space.pk] = (backend, reason)
        logger.info("ranking space %s with %s: %s", space.pk, backend, reason)
        if backend == "pgvector":
            memory.drop_copies()
        report_ranking()
    return backend


def _decide(space: EmbeddingSpace, setting: str) -> tuple[str, str]:
    if setting == "pgvector":
        return "pgvector", "CLETIR_RANK_BACKEND=pgvector"
    device = memory.device_for(space)
    photos = memory.space_size(space)
    # With the room a copy keeps for photos indexed after its load.
    needed = int(photos * memory.GROWTH) * memory.bytes_per_photo(space, device)
    cap = memory.memory_cap_bytes(device)
    if needed > cap:
        return "pgvector", f"{photos} photos need {needed >> 20} MB, over the {cap >> 20} MB memory cap"
    if setting == "memory":
        return "memory", f"CLETIR_RANK_BACKEND=memory, {device}"
    if device.type == "cuda":
        return "memory", f"auto: {device}"
    limit = settings.CLETIR_RANK_CPU_MAX_PHOTOS
    if photos <= limit:
        return "memory", f"auto: {photos} photos on CPU, at most CLETIR_RANK_CPU_MAX_PHOTOS={limit}"
    return "pgvector", f"auto: {photos} photos on CPU, over CLETIR_RANK_CPU_MAX_PHOTOS={limit}"


def rank(space: EmbeddingSpace, query_vector: np.ndarray, scope: Scope | list[int], top_n: int,
         backend: str | None = None, exact: bool | None = None) -> Ranking:
    """The `top_n` photos of the scope in `space` by fused score <u, e(x)>, best first.

    `query_vector` is u = [(1-λ)t; λq] (`fusion.query_vector`), length `space.dim`; failed
    photos are never returned. `backend` overrides the choice (tests, the benchmark); `exact`
    picks the pgvector backend's method (see `pgvector.rank`), and so that backend.
    """
    u, scope = pgvector.checked_query(space, query_vector), Scope.of(scope)
    backend = backend or ("pgvector" if exact is not None else choose_backend(space))
    if backend == "memory":
        return memory.rank(space, u, scope, top_n)
    return pgvector.rank(space, u, scope, top_n, exact=exact)


def warm_up(space: EmbeddingSpace) -> str:
    """Choose the backend for `space` and load its copy when it is the memory one (a worker
    process does this before its first search)."""
    backend = choose_backend(space)
    if backend == "memory":
        memory.current_copy(space)
    return backend


def process_report() -> dict:
    """This process's backend per space and what its copies hold (for the worker heartbeat)."""
    return {"backends": {str(pk): {"backend": b, "reason": r} for pk, (b, r) in _chosen.items()},
            "copies": memory.report()}
