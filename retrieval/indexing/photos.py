"""Indexing photos into a space: claimed, read, decoded, embedded and stored as a pipeline.

A run (`index_pending_photos`) feeds the engine's pipeline (retrieval.engine.photo_pipeline:
reading and decoding in a prefetch thread, the forward passes, the stores, overlapped) with
batches claimed from the database and stores what comes out, both in short transactions on the
calling thread (claims.py explains why no transaction spans the work and how each photo is
indexed exactly once). At most CLETIR_INDEX_PREFETCH batches are claimed and being prepared
ahead of the one in the encoders, which bounds memory (photo_batches states the bytes per photo).

Photos left behind by a worker that died (suspects, claims.py) are indexed first, one at a
time with nothing else in flight, so a photo that kills the process decoding it is found and,
after CLETIR_INDEX_MAX_ATTEMPTS deliveries, marked failed. A run that stops on an error gives
its claims back; a run that is killed leaves them to its next delivery (claims.take_back).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from assets.imaging import to_rgb8
from retrieval.engine.fusion import photo_vectors
from retrieval.engine.photo_decoding import decode_reduced
from retrieval.engine.photo_batches import PhotoBatchPreparer, PreparedPhotos
from retrieval.engine.photo_pipeline import Features, PipelineClock, embed_batches, features_to_numpy, forward

from ..models import EmbeddingSpace
from . import claims
from .claims import ClaimedPhoto, Lease

logger = logging.getLogger(__name__)


def decode_for_embedding(path: str):
    """A stored photo as the encoders get it on a CPU: upright, 8-bit RGB with its tones kept
    (16-bit greys included), reduced towards the encoders' size (photo_decoding.decode_reduced)."""
    return decode_reduced(path, to_rgb8)


@dataclass
class IndexingRun:
    """What a run did, and where its time went (`clock.seconds`)."""

    indexed: int = 0
    failed: int = 0
    finished: bool = False  # nothing claimable was left (False: the deadline stopped it)
    clock: PipelineClock = field(default_factory=PipelineClock)


def index_pending_photos(space: EmbeddingSpace, encoders, lease: Lease, *, batch_size: int, prefetch: int,
                         threads: int, deadline: float) -> IndexingRun:
    """Index the space's pending photos until none is left or the monotonic `deadline` has
    passed (every run does at least one batch); the claims of a run that raises are given back."""
    run = IndexingRun()
    preparer = encoders.photo_preparer(threads, to_rgb=to_rgb8)
    try:
        if _index_suspects(run, space, encoders, lease, preparer, deadline):
            run.finished = embed_batches(
                encoders, preparer, _FreshClaims(space, lease, batch_size), lambda photo: photo.path,
                lambda photos, prepared, features: _store(run, space, lease, photos, prepared, features),
                prefetch=prefetch, deadline=deadline, clock=run.clock,
            )
    except BaseException:
        _give_back(space, lease)
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
    preparer = encoders.photo_preparer(threads=1, to_rgb=to_rgb8)
    try:
        _embed_now(run, space, encoders, lease, preparer, photos)
    except BaseException:
        _give_back(space, lease)
        raise
    finally:
        preparer.close()
    return run.indexed, run.failed


class _FreshClaims:
    """Claims the next batch past the last one; once at the end it looks again from the start,
    for photos skipped while another claimer held them for a moment."""

    def __init__(self, space: EmbeddingSpace, lease: Lease, batch_size: int) -> None:
        self.space, self.lease, self.batch_size = space, lease, batch_size
        self.after, self.rewound = 0, False

    def __call__(self) -> list[ClaimedPhoto]:
        photos = claims.claim_fresh(self.space, self.lease, self.batch_size, self.after)
        if not photos and self.after and not self.rewound:
            self.rewound = True
            photos = claims.claim_fresh(self.space, self.lease, self.batch_size, 0)
        if photos:
            self.after = photos[-1].asset_id
        return photos


def _index_suspects(run: IndexingRun, space: EmbeddingSpace, encoders, lease: Lease, preparer: PhotoBatchPreparer,
                    deadline: float) -> bool:
    """Index the suspects one by one. Returns False when the deadline stopped it."""
    after = 0
    while True:
        photo, poisoned = run.clock.timed("take", claims.claim_suspect, space, lease, after)
        run.failed += len(poisoned)
        if photo is None:
            return True
        after = photo.asset_id
        logger.warning("photo %s was being indexed by a worker that died; indexing it alone (delivery %d)",
                       photo.asset_id, photo.attempts)
        _embed_now(run, space, encoders, lease, preparer, [photo])
        if time.monotonic() >= deadline:
            return False


def _embed_now(run: IndexingRun, space: EmbeddingSpace, encoders, lease: Lease, preparer: PhotoBatchPreparer,
               photos: list[ClaimedPhoto]) -> None:
    """One batch, start to end, with nothing else in flight."""
    prepared = run.clock.timed("prepare_wait", preparer.prepare, [photo.path for photo in photos])
    features = run.clock.timed("forward", features_to_numpy, forward(encoders, prepared, run.clock))
    run.clock.add(prepared.seconds)
    run.clock.timed("store", _store, run, space, lease, photos, prepared, features)


def _store(run: IndexingRun, space: EmbeddingSpace, lease: Lease, photos: list[ClaimedPhoto],
           prepared: PreparedPhotos, features: Features) -> None:
    ids = [photos[i].asset_id for i in prepared.decoded]
    failures = {photos[i].asset_id: error for i, error in prepared.errors.items()}
    stored = claims.store(space, lease, ids, photo_vectors(*features), failures)
    run.indexed += len(stored.indexed)
    run.failed += len(stored.failed)
    for asset_id in stored.failed:
        logger.warning("photo %s could not be indexed in %s: %s", asset_id, space, failures[asset_id])


def _give_back(space: EmbeddingSpace, lease: Lease) -> None:
    try:
        claims.release(space, lease)
    except Exception:  # the database may be why the run stopped; the lease runs out anyway
        logger.exception("could not give back the claims of an indexing run in %s", space)
