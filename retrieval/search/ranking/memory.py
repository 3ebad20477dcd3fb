"""The memory backend: a search worker holds each serving space's photo vectors and ranks a
scope exactly with one matrix product.

Per process and space, a `SpaceCopy` holds every vector of the space as one tensor (float16: the
stored half vectors as they are, half the bytes of float32 to stream through, and torch
accumulates in float32; bench/search.py), with per row the photo's id, its library and whether
it counts (a vector and not failed). Where a CPU multiplies bfloat16 much faster than float16
(torch has AMX/AVX512-BF16 kernels for bfloat16 matrix-vector products and none as fast for
float16 on such CPUs: 6.9 ms against 22.6 ms over 100k x 896 on a 2-core Xeon with AMX), the
copy keeps a bfloat16 twin of its rows for the product (`product_dtype`, measured once per
process); the float16 rows stay the source of the exact scores. A copy is loaded once by a
binary COPY and kept current before every ranking by the change feed (`feed.py`: one indexed
query); a copy that cannot prove it is current reloads.

A ranking masks the scope's rows, multiplies, and hands the fast scores to `exact.py`, which
scores exactly only the photos the fast pass's error bound could misplace. The same fast scores
serve the match count (no second scan). What is stored is still checked against the scope in
the database (`retrieval.search.results`): a stale copy can cost a re-rank, never a leak.

Error bound of the fast pass, for a photo vector e and the query u: on CPU the query is rounded
to float16 (q) and the product accumulated in float32 then rounded to float16, so
|fast - <u, e>| <= ‖u - q‖·‖e‖ + γ_n·‖q‖·‖e‖ + 2⁻¹¹·|fast| + 2⁻²⁵ (γ_n = n·2⁻²⁴/(1 - n·2⁻²⁴),
‖e‖ at most the copy's largest row norm); with a bfloat16 product, q and the rows are rounded to
bfloat16 (e_b, each element within 2⁻⁸ of e's) and the result too, which adds 2⁻⁸·‖q‖·‖e‖ and
makes the last terms 2⁻⁸·|fast| (a wider band of photos is scored exactly, the answer is the
same). On CUDA u is split into two float16 parts, a head and a tail that add up to u within
~2⁻²² of it, multiplied as two columns of one product with float32 output, which leaves little
more than the accumulation term.
A device that accumulated float16 products in float16 would break the bound: each process
checks once (`_accumulates_in_float32`) and keeps float32 rows where it does.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from django.conf import settings

from retrieval.engine.runtime import get_profile, resolve_device

from ...models import EmbeddingSpace
from ..cutoff import ScoreHistogram
from . import feed
from .base import Ranking
from .exact import TINY, exact_top
from .scope import Scope

logger = logging.getLogger(__name__)

# Room for photos indexed after the load before the tensors are re-allocated.
GROWTH = 1.25
# A copy whose rows are more than this share dead (deleted, failed, moved out of the space) is
# reloaded rather than carried.
MAX_DEAD_SHARE = 0.25
# Per row beside the vector: asset id (8 bytes, host), library id (8), live flag (1).
ROW_OVERHEAD_BYTES = 17
# Scopes whose rows are fewer than this share of the copy multiply only their rows (gathered
# first: the gather reads and writes each row, the product reads it again, so it pays below a
# third); larger ones multiply every row and pick theirs.
GATHER_BELOW_SHARE = 0.3
# The gather's buffer, kept per copy.
GATHER_BUFFER_BYTES = 64 << 20
# How long a counted space size is trusted when choosing a backend without a copy.
SIZE_TTL_SECONDS = 300
UNIT_ROUNDOFF_32 = 2.0 ** -24


def device_for(space: EmbeddingSpace) -> torch.device:
    """Where this process ranks `space`: the device its encoders use (CLETIR_DEVICE, else CUDA
    when present)."""
    return resolve_device(get_profile(space.profile))


_float32_accumulation: dict[str, bool] = {}


def _accumulates_in_float32(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `dtype` (float16, bfloat16) products on `device` are summed in float32 (the error
    bound's premise): 1024 + 4095 × 0.25 is 2047.75 (2048 once rounded), which float16 or
    bfloat16 sums cannot reach (they stall at 1024)."""
    key = f"{device}/{dtype}"
    if key not in _float32_accumulation:
        rows = torch.full((2, 4096), 0.25, dtype=dtype, device=device)
        rows[:, 0] = 1024
        ones = torch.ones(4096, dtype=dtype, device=device)
        _float32_accumulation[key] = bool(torch.all((rows @ ones).float() == 2048.0))
    return _float32_accumulation[key]


def storage_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if _accumulates_in_float32(device, torch.float16) else torch.float32


_product_dtypes: dict[str, torch.dtype] = {}
# A bfloat16 twin costs a second copy of the rows: only worth it when it is this much faster.
BFLOAT16_MIN_SPEEDUP = 1.5


def product_dtype(device: torch.device) -> torch.dtype:
    """The dtype the fast pass multiplies in on `device`: the storage dtype, or on a CPU where
    bfloat16 products measure at least BFLOAT16_MIN_SPEEDUP times faster than float16 ones (and
    sum in float32), bfloat16. Measured once per process on a block of rows (~0.1 s)."""
    key = str(device)
    if key not in _product_dtypes:
        stored = storage_dtype(device)
        chosen = stored
        if device.type == "cpu" and stored == torch.float16 and _accumulates_in_float32(device, torch.bfloat16):
            rows = torch.randn(16384, 768).to(torch.float16)
            query = torch.randn(768)
            half = _seconds(lambda: rows @ query.half())
            twin = rows.bfloat16()
            if half >= BFLOAT16_MIN_SPEEDUP * _seconds(lambda: twin @ query.bfloat16()):
                chosen = torch.bfloat16
        _product_dtypes[key] = chosen
    return _product_dtypes[key]


def _seconds(product, repeats: int = 5) -> float:
    """The best of a few timings (the first call warms the kernel up)."""
    product()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - started)
    return best


def _element_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def bytes_per_photo(space: EmbeddingSpace, device: torch.device) -> int:
    stored, product = storage_dtype(device), product_dtype(device)
    twin = _element_bytes(product) if product != stored else 0
    return space.dim * (_element_bytes(stored) + twin) + ROW_OVERHEAD_BYTES


def memory_cap_bytes(device: torch.device) -> int:
    """CLETIR_RANK_MEMORY_MB, else half the GPU's memory on CUDA and a quarter of the RAM on CPU."""
    if settings.CLETIR_RANK_MEMORY_MB > 0:
        return settings.CLETIR_RANK_MEMORY_MB << 20
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


@dataclass
class _Lookup:
    """Rows of asset ids: the loaded rows sorted once, and a dict for rows appended later."""

    sorted_ids: np.ndarray
    rows_of_sorted: np.ndarray
    appended: dict[int, int]

    def rows(self, asset_ids: np.ndarray) -> np.ndarray:
        """The row of each id, -1 where the copy has none."""
        found = np.full(len(asset_ids), -1, dtype=np.int64)
        if len(self.sorted_ids):
            at = np.minimum(np.searchsorted(self.sorted_ids, asset_ids), len(self.sorted_ids) - 1)
            hit = self.sorted_ids[at] == asset_ids
            found[hit] = self.rows_of_sorted[at[hit]]
        if self.appended:
            for i in np.flatnonzero(found < 0):
                found[i] = self.appended.get(int(asset_ids[i]), -1)
        return found


class SpaceCopy:
    """One space's vectors in this process (see the module docstring)."""

    def __init__(self, space: EmbeddingSpace, device: torch.device, capacity: int) -> None:
        self.space_id, self.dim, self.split = space.pk, space.dim, space.vlm_dim
        self.device, self.dtype, self.product_dtype = device, storage_dtype(device), product_dtype(device)
        self.vectors = torch.zeros((capacity, self.dim), dtype=self.dtype, device=device)
        # The rows the fast pass multiplies: the vectors themselves, or their bfloat16 twin.
        self.product_rows = (self.vectors if self.product_dtype == self.dtype else
                             torch.zeros((capacity, self.dim), dtype=self.product_dtype, device=device))
        self.library_ids = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self.live = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.asset_ids = np.zeros(capacity, dtype=np.int64)
        self.rows = 0
        self.max_norm = 0.0
        self.version = 0
        self.watermark = 0
        self.identity: tuple = ()
        self.lookup = _Lookup(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), {})
        self.loaded_at = time.time()
        self.load_seconds = 0.0
        self._scope_rows: dict[tuple, torch.Tensor] = {}
        self._buffer: torch.Tensor | None = None

    # ------------------------------------------------------------------ loading and the feed

    @classmethod
    def load(cls, space: EmbeddingSpace, device: torch.device) -> SpaceCopy:
        """Every vector of `space` by one binary COPY; the feed's header is read first, so the
        changes the load may have missed are replayed by the next `refresh`."""
        started = time.perf_counter()
        head = feed.header(space)
        copy = cls(space, device, capacity=int(feed.count_rows(space) * GROWTH) + 64)
        for block in feed.load_rows(space):
            rows = np.arange(copy.rows, copy.rows + len(block))
            copy._ensure_capacity(copy.rows + len(block))
            copy._write(rows, block["asset"].astype(np.int64), block["library"].astype(np.int64),
                        block["live"].astype(bool), block["vector"]["values"].astype(np.float16))
            copy.rows += len(block)
        order = np.argsort(copy.asset_ids[:copy.rows], kind="stable")
        copy.lookup = _Lookup(copy.asset_ids[:copy.rows][order], order, {})
        copy.watermark, copy.identity = head.watermark, head.identity
        copy.load_seconds = time.perf_counter() - started
        return copy

    def refresh(self, space: EmbeddingSpace) -> bool:
        """Apply what changed since the last read of the feed; False when this copy cannot
        prove it is current (reload it)."""
        changes = feed.changes_since(space, self.watermark)
        head = changes.header
        if (head.identity != self.identity or head.watermark < self.watermark
                or head.pruned_below > self.watermark):
            return False
        if len(changes.asset_ids):
            self._apply(changes)
        self.watermark = head.watermark
        dead = self.rows - int(self.live[:self.rows].sum())
        return not (self.rows > 1000 and dead > MAX_DEAD_SHARE * self.rows)

    def _apply(self, changes: feed.Changes) -> None:
        rows = self.lookup.rows(changes.asset_ids)
        new = (rows < 0) & changes.live  # a photo the copy never held, now in the space
        if new.any():
            added = np.arange(self.rows, self.rows + int(new.sum()))
            self._ensure_capacity(self.rows + len(added))
            rows[new] = added
            for asset_id, row in zip(changes.asset_ids[new].tolist(), added.tolist()):
                self.lookup.appended[asset_id] = row
            self.rows += len(added)
        known = rows >= 0
        self._write(rows[known], changes.asset_ids[known], changes.library_ids[known], changes.live[known],
                    changes.vectors[known])
        self.version += 1
        self._scope_rows.clear()

    def _write(self, rows: np.ndarray, asset_ids: np.ndarray, library_ids: np.ndarray, live: np.ndarray,
               vectors: np.ndarray) -> None:
        if not len(rows):
            return
        values = torch.from_numpy(np.ascontiguousarray(vectors)).to(self.device, self.dtype)
        libraries, flags = torch.from_numpy(library_ids).to(self.device), torch.from_numpy(live).to(self.device)
        twin = values.to(self.product_dtype) if self.product_rows is not self.vectors else None
        if rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):  # a load's block: a slice
            where = slice(int(rows[0]), int(rows[-1]) + 1)
            self.vectors[where], self.library_ids[where], self.live[where] = values, libraries, flags
            if twin is not None:
                self.product_rows[where] = twin
        else:
            index = torch.from_numpy(rows).to(self.device)
            self.vectors.index_copy_(0, index, values)
            self.library_ids.index_copy_(0, index, libraries)
            self.live.index_copy_(0, index, flags)
            if twin is not None:
                self.product_rows.index_copy_(0, index, twin)
        self.asset_ids[rows] = asset_ids
        norms = torch.linalg.vector_norm(values.float(), dim=1)
        if len(norms):
            self.max_norm = max(self.max_norm, float(norms.max()))

    def _ensure_capacity(self, rows: int) -> None:
        capacity = len(self.asset_ids)
        if rows <= capacity:
            return
        grown = int(rows * GROWTH) + 64

        def grow(tensor: torch.Tensor, fill) -> torch.Tensor:
            bigger = torch.full((grown, *tensor.shape[1:]), fill, dtype=tensor.dtype, device=self.device)
            bigger[:capacity] = tensor
            return bigger

        self.product_rows = grow(self.product_rows, 0) if self.product_rows is not self.vectors else None
        self.vectors = grow(self.vectors, 0)
        if self.product_rows is None:
            self.product_rows = self.vectors
        self.library_ids = grow(self.library_ids, -1)
        self.live = grow(self.live, False)
        self.asset_ids = np.concatenate([self.asset_ids, np.zeros(grown - capacity, dtype=np.int64)])

    # ------------------------------------------------------------------ ranking

    @property
    def photos(self) -> int:
        return int(self.live[:self.rows].sum())

    @property
    def nbytes(self) -> int:
        buffer = 0 if self._buffer is None else self._buffer.element_size() * self._buffer.nelement()
        twin = (0 if self.product_rows is self.vectors
                else self.product_rows.element_size() * self.product_rows.nelement())
        return (self.vectors.element_size() * self.vectors.nelement() + twin + len(self.asset_ids) * ROW_OVERHEAD_BYTES
                + buffer)

    def scope_rows(self, scope: Scope) -> torch.Tensor:
        """Rows of the scope's photos (cached per scope until the copy changes)."""
        key = scope.cache_key()
        if key is not None and key in self._scope_rows:
            return self._scope_rows[key]
        libraries = torch.tensor(scope.library_ids, dtype=torch.int64, device=self.device)
        mask = self.live[:self.rows] & torch.isin(self.library_ids[:self.rows], libraries)
        photo_ids = scope.photo_ids()
        if photo_ids is not None:
            selected = torch.zeros(self.rows, dtype=torch.bool, device=self.device)
            rows = self.lookup.rows(photo_ids)
            selected[torch.from_numpy(rows[rows >= 0]).to(self.device)] = True
            mask &= selected
        rows = torch.nonzero(mask).squeeze(1)
        if key is not None:
            if len(self._scope_rows) >= 16:
                self._scope_rows.clear()
            self._scope_rows[key] = rows
        return rows

    def scores(self, query: np.ndarray, scope: Scope) -> MemoryScopeScores:
        """The fast scores of the scope's photos: one product, over every row and then the
        scope's picked (large scopes), or over the scope's rows only (small ones)."""
        rows = self.scope_rows(scope)
        u = np.asarray(query, dtype=np.float32)
        operand = self._operand(u)
        if len(rows) < GATHER_BELOW_SHARE * self.rows:
            fast = self._product_of_rows(rows, operand)
        else:
            # index_select, not `fast[rows]`: generic indexing is several times slower on CPU.
            fast = self._product(self.product_rows[:self.rows], operand).index_select(0, rows)
        return MemoryScopeScores(self, rows, fast.double(), self._error(u, operand, fast))

    def _operand(self, u: np.ndarray) -> torch.Tensor:
        """The query as the product takes it: in the product's dtype on CPU (float16, bfloat16;
        float32 rows: float32); on CUDA its float16 head and tail (hi + lo = u to ~2⁻²² of
        it), two columns of one product."""
        exact = torch.from_numpy(u).to(self.device)
        if self.product_dtype != torch.float16:
            return exact.to(self.product_dtype)
        head = exact.half()
        if self.device.type != "cuda":
            return head
        return torch.stack([head, (exact - head.float()).half()], dim=1)

    def _product(self, matrix: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
        if operand.dim() == 2:  # CUDA: float16 inputs, float32 sums and output
            return torch.mm(matrix, operand, out_dtype=torch.float32).sum(dim=1)
        return matrix @ operand

    def _product_of_rows(self, rows: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
        """The product over some rows, gathered a block at a time into one buffer kept for the
        next ranking: on CPU a fresh buffer per ranking costs more in page faults than the
        product itself (bench/search.py)."""
        block = max(1, GATHER_BUFFER_BYTES // (self.dim * self.product_rows.element_size()))
        if self._buffer is None:
            self._buffer = torch.empty((block, self.dim), dtype=self.product_dtype, device=self.device)
        parts = []
        for start in range(0, len(rows), block):
            picked = rows[start:start + block]
            buffer = self._buffer[:len(picked)]
            torch.index_select(self.product_rows, 0, picked, out=buffer)
            parts.append(self._product(buffer, operand))
        if not parts:
            return torch.zeros(0, dtype=torch.float32, device=self.device)
        return torch.cat(parts)

    def _error(self, u: np.ndarray, operand: torch.Tensor, fast: torch.Tensor) -> float:
        """The bound on |fast - exact| of the module docstring, for every row of this copy."""
        norm = self.max_norm * (1 + UNIT_ROUNDOFF_32)
        gamma = self.dim * UNIT_ROUNDOFF_32 / (1 - self.dim * UNIT_ROUNDOFF_32)
        columns = operand.double().reshape(len(u), -1)
        represented = columns.sum(dim=1).cpu().numpy()
        query_norm = float(columns.norm(dim=0).sum())
        # Rows multiplied as their bfloat16 twin: each element within 2⁻⁸ of the stored one.
        twin = _unit_roundoff(self.product_dtype) if self.product_rows is not self.vectors else 0.0
        error = (float(np.linalg.norm(u.astype(np.float64) - represented)) * norm
                 + twin * query_norm * norm + gamma * query_norm * norm * (1 + twin))
        largest = float(fast.abs().max()) if len(fast) else 0.0
        if fast.dtype in (torch.float16, torch.bfloat16):  # the result rounded to its dtype
            info = torch.finfo(fast.dtype)
            error += _unit_roundoff(fast.dtype) * (largest + error) + info.smallest_normal * info.eps / 2
        elif columns.shape[1] == 2:  # the two columns' float32 sum
            error += UNIT_ROUNDOFF_32 * (largest + error)
        return error * 1.01 + TINY


def _unit_roundoff(dtype: torch.dtype) -> float:
    """Half the spacing of `dtype` at 1: 2⁻¹¹ for float16, 2⁻⁸ for bfloat16, 2⁻²⁴ for float32."""
    return torch.finfo(dtype).eps / 2


class MemoryScopeScores:
    """A memory pass's fast scores (float64 on the copy's device) over the scope's rows."""

    def __init__(self, copy: SpaceCopy, rows: torch.Tensor, fast: torch.Tensor, error: float) -> None:
        self.copy, self.rows, self.fast, self.error = copy, rows, fast, error
        self.size = len(rows)

    def histogram(self, bins: int) -> ScoreHistogram:
        """Counted on the device: only the bins come back."""
        if not self.size:
            return ScoreHistogram.of(np.zeros(0), bins)
        low, high = float(self.fast.min()), float(self.fast.max())
        if high <= low:
            return ScoreHistogram.of(np.full(self.size, low), bins)
        counts = torch.histc(self.fast, bins=bins, min=low, max=high)
        return ScoreHistogram(counts.cpu().numpy().astype(np.int64), low, high)

    def count_above(self, score: float) -> int:
        return int((self.fast > score).sum())

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        values, positions = torch.topk(self.fast, min(k, self.size))
        return positions.cpu().numpy(), values.cpu().numpy()

    def select(self, low: float, high: float) -> np.ndarray:
        return torch.nonzero((self.fast >= low) & (self.fast <= high)).squeeze(1).cpu().numpy()

    def photos(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows.index_select(0, torch.from_numpy(np.asarray(positions, dtype=np.int64)).to(self.copy.device))
        vectors = self.copy.vectors.index_select(0, rows).to(torch.float16).cpu().numpy()
        return self.copy.asset_ids[rows.cpu().numpy()], vectors


# ---------------------------------------------------------------------------- this process's copies

_copies: dict[int, SpaceCopy] = {}
_sizes: dict[int, tuple[float, int]] = {}


def loaded(space: EmbeddingSpace) -> SpaceCopy | None:
    return _copies.get(space.pk)


def space_size(space: EmbeddingSpace) -> int:
    """Photos the space's copy holds or would hold (counted at most every SIZE_TTL_SECONDS)."""
    copy = _copies.get(space.pk)
    if copy is not None:
        return copy.rows
    counted_at, size = _sizes.get(space.pk, (0.0, 0))
    if time.monotonic() - counted_at > SIZE_TTL_SECONDS:
        size = feed.count_rows(space)
        _sizes[space.pk] = (time.monotonic(), size)
    return size


def current_copy(space: EmbeddingSpace) -> SpaceCopy:
    """This process's copy of `space`, current as of now: refreshed from the feed, or (re)loaded
    when it cannot be. A process keeps one space: loading another drops the rest."""
    copy = _copies.get(space.pk)
    if copy is not None and copy.refresh(space):
        return copy
    reason = "first use" if copy is None else "cannot prove it is current"
    _copies.clear()
    copy = SpaceCopy.load(space, device_for(space))
    _copies[space.pk] = copy
    logger.info("ranking from memory: loaded %d photos of space %s (%s, %s, product in %s, %.0f MB) in %.2f s (%s)",
                copy.rows, space.pk, copy.device, str(copy.dtype).replace("torch.", ""),
                str(copy.product_dtype).replace("torch.", ""), copy.nbytes / 2**20, copy.load_seconds, reason)
    from ...workers import report_ranking  # imported here: workers imports the search wing

    report_ranking()
    return copy


def drop_copies() -> None:
    _copies.clear()


def rank(space: EmbeddingSpace, query: np.ndarray, scope: Scope, top_n: int) -> Ranking:
    """The exact top `top_n` of the scope, and the pass's fast scores for the match count."""
    return rank_copy(current_copy(space), query, scope, top_n)


def rank_copy(copy: SpaceCopy, query: np.ndarray, scope: Scope, top_n: int) -> Ranking:
    """`rank` on a copy as it is (the benchmark ranks copies it planted on the device)."""
    scores = copy.scores(query, scope)
    n = min(top_n, scores.size)
    if n <= 0:
        return Ranking.empty("memory", lambda: scores, copy.watermark)
    _, best = scores.top(n)
    # The photos the error bound could bring into the top n, all fetched at once.
    first = scores.count_above(float(best[-1]) - 2 * scores.error - TINY)

    def fetch(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        positions, fast = scores.top(m)
        asset_ids, vectors = scores.photos(positions)
        return asset_ids, fast, vectors

    asset_ids, parts = exact_top(fetch, scores.size, first, scores.error, query, copy.split, n)
    return Ranking(asset_ids, parts, "memory", lambda: scores, copy.watermark)


def report() -> dict:
    """What this process holds, for its worker's heartbeat."""
    return {
        str(space_id): {"photos": copy.photos, "bytes": copy.nbytes, "mb": round(copy.nbytes / 2**20, 1),
                        "device": str(copy.device),
                        "dtype": str(copy.dtype).replace("torch.", ""),
                        "product_dtype": str(copy.product_dtype).replace("torch.", ""),
                        "loaded_at": round(copy.loaded_at),
                        "load_seconds": round(copy.load_seconds, 2)}
        for space_id, copy in _copies.items()
    }
