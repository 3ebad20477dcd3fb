"""Indexing photos into a space: claimed, read, decoded, embedded and stored as a pipeline.

One run (`index_pending_photos`) keeps the encoders busy with batches in four stages at once:

    claim batch n+2 | read + decode + resize n+1 | forward passes n | store n-1

* claim and store: the calling thread, in short transactions (claims.py explains why no
  transaction spans the work and how a photo is indexed exactly once); database work stays on
  this thread, on its connection;
* read, decode, resize: a prefetch thread prepares each claimed batch
  (retrieval.engine.photo_batches): a pool of decoding threads (Pillow releases the GIL), and
  on a GPU nvJPEG and torch on a CUDA stream of their own;
* forward passes: on a GPU they are queued and run while this thread stores the previous
  batch; on a CPU they are synchronous and each batch is stored (milliseconds) right after its
  passes, while the next batches are being decoded.

At most CLETIR_INDEX_PREFETCH batches are claimed and being prepared ahead of the one in the
encoders, so memory is bounded by (prefetch + 1) batches of pixels (photo_batches states the
bytes per photo) plus one batch of vectors awaiting its store.

Photos left behind by a worker that died (suspects, claims.py) are indexed first, one at a
time with nothing else in flight, so a photo that kills the process decoding it is found and,
after CLETIR_INDEX_MAX_ATTEMPTS deliveries, marked failed. A run that stops on an error gives
its claims back; a run that is killed leaves them to its next delivery (claims.take_back).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from retrieval.engine.encoders import features_to_numpy
from retrieval.engine.fusion import photo_vectors
from retrieval.engine.photo_batches import PhotoBatchPreparer, PreparedPhotos

from ..models import EmbeddingSpace
from . import claims
from .claims import ClaimedPhoto, Lease

logger = logging.getLogger(__name__)


@dataclass
class IndexingRun:
    """What a run did, and where its time went (seconds: the calling thread's stages, and the
    preparing threads' read / decode / preprocess summed over threads)."""

    indexed: int = 0
    failed: int = 0
    finished: bool = False  # nothing claimable was left (False: the deadline stopped it)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def timed(self, stage: str, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start


def index_pending_photos(space: EmbeddingSpace, encoders, lease: Lease, *, batch_size: int, prefetch: int,
                         threads: int, deadline: float) -> IndexingRun:
    """Index the space's pending photos until none is left or the monotonic `deadline` has
    passed (every run does at least one batch); the claims of a run that raises are given back."""
    run = IndexingRun()
    preparer = encoders.photo_preparer(threads)
    try:
        if _index_suspects(run, space, encoders, lease, preparer, deadline):
            _index_fresh(run, space, encoders, lease, preparer, batch_size, max(1, prefetch), deadline)
    except BaseException:
        try:
            claims.release(space, lease)
        except Exception:  # the database may be why the run stopped; the lease runs out anyway
            logger.exception("could not give back the claims of an indexing run in %s", space)
        raise
    finally:
        preparer.close()
    return run


def embed_batch(space: EmbeddingSpace, encoders, batch_size: int, lease: Lease | None = None) -> tuple[int, int]:
    """Claim, embed and store one batch of pending photos, without a pipeline (tests, tools).
    Returns (indexed, failed); (0, 0) means nothing was left to claim."""
    lease = lease or Lease.new()
    photos = claims.claim_fresh(space, lease, batch_size)
    if not photos:
        return 0, 0
    run = IndexingRun()
    preparer = encoders.photo_preparer(threads=1)
    try:
        prepared = preparer.prepare([photo.path for photo in photos])
        _store(run, space, lease, photos, prepared, features_to_numpy(encoders.encode_prepared(prepared)))
    except BaseException:
        claims.release(space, lease)
        raise
    finally:
        preparer.close()
    return run.indexed, run.failed


def _index_suspects(run: IndexingRun, space: EmbeddingSpace, encoders, lease: Lease, preparer: PhotoBatchPreparer,
                    deadline: float) -> bool:
    """Index the suspects one by one. Returns False when the deadline stopped it."""
    after = 0
    while True:
        photo, poisoned = run.timed("claim", claims.claim_suspect, space, lease, after)
        run.failed += len(poisoned)
        if photo is None:
            return True
        after = photo.asset_id
        logger.warning("photo %s was being indexed by a worker that died; indexing it alone (delivery %d)",
                       photo.asset_id, photo.attempts)
        prepared = run.timed("prepare_wait", preparer.prepare, [photo.path])
        features = run.timed("forward", lambda: features_to_numpy(encoders.encode_prepared(prepared)))
        _store(run, space, lease, [photo], prepared, features)
        if time.monotonic() >= deadline:
            return False


def _index_fresh(run: IndexingRun, space: EmbeddingSpace, encoders, lease: Lease, preparer: PhotoBatchPreparer,
                 batch_size: int, prefetch: int, deadline: float) -> None:
    ahead: deque[tuple[list[ClaimedPhoto], Future[PreparedPhotos]]] = deque()
    position = {"after": 0, "rewound": False, "exhausted": False}

    def claim_next(pool: ThreadPoolExecutor) -> bool:
        """Claim the next batch and hand it to the prefetch thread; False when none is left."""
        photos = run.timed("claim", claims.claim_fresh, space, lease, batch_size, position["after"])
        if not photos and position["after"] and not position["rewound"]:
            # Photos skipped behind us (another claimer held them for a moment): look once more.
            position.update(after=0, rewound=True)
            photos = run.timed("claim", claims.claim_fresh, space, lease, batch_size, 0)
        if not photos:
            position["exhausted"] = True
            return False
        position["after"] = photos[-1].asset_id
        ahead.append((photos, pool.submit(preparer.prepare, [photo.path for photo in photos])))
        return True

    def fill(pool: ThreadPoolExecutor) -> None:
        while len(ahead) < prefetch and not position["exhausted"] and time.monotonic() < deadline and claim_next(pool):
            pass

    # On a GPU the forward passes of a batch are queued and this thread stores the batch before
    # while they run; on a CPU they are synchronous, and each batch is stored as soon as it is
    # embedded (nothing would overlap, and a kill then loses only the batch in the encoders).
    overlap = encoders.device.type == "cuda"
    with ThreadPoolExecutor(1, thread_name_prefix="cletir-prefetch") as pool:
        try:
            claim_next(pool)  # at least one batch per run, whatever the deadline
            fill(pool)
            previous = None
            while ahead:
                photos, future = ahead.popleft()
                try:
                    prepared = run.timed("prepare_wait", future.result)
                    features = run.timed("forward", encoders.encode_prepared, prepared)  # only queued on a GPU
                finally:  # the batch before is stored even when this one fails
                    if previous is not None:
                        _store(run, space, lease, *previous)
                        previous = None
                fill(pool)
                embedded = (photos, prepared, run.timed("forward", features_to_numpy, features))
                if overlap:
                    previous = embedded
                else:
                    _store(run, space, lease, *embedded)
            if previous is not None:
                _store(run, space, lease, *previous)
        finally:
            for _, future in ahead:
                future.cancel()
    run.finished = position["exhausted"]


def _store(run: IndexingRun, space: EmbeddingSpace, lease: Lease, photos: list[ClaimedPhoto],
           prepared: PreparedPhotos, features) -> None:
    for stage, seconds in prepared.seconds.items():
        run.seconds[stage] += seconds
    ids = [photos[i].asset_id for i in prepared.decoded]
    failures = {photos[i].asset_id: error for i, error in prepared.errors.items()}
    stored = run.timed("store", claims.store, space, lease, ids, photo_vectors(*features), failures)
    run.indexed += len(stored.indexed)
    run.failed += len(stored.failed)
    for asset_id in stored.failed:
        logger.warning("photo %s could not be indexed in %s: %s", asset_id, space, failures[asset_id])
