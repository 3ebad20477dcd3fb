"""Leases on the photos being indexed: claimed in one short transaction, stored in another.

No transaction spans the work. Reading, decoding and embedding a batch takes seconds (minutes
for a large batch on a CPU); row locks held that long would stall every delete of those photos.
So a batch goes through three steps:

1. Claim (`claim_fresh`, a short transaction). Pending photos nobody holds are locked
   `FOR NO KEY UPDATE SKIP LOCKED` (two claimers never take the same photo; a photo whose delete
   holds it `FOR UPDATE` is skipped) and get an `IndexingClaim` row (photo, space, lease, time,
   attempts), inserted `ON CONFLICT DO NOTHING` on (photo, space): the unique claim decides
   between workers. A second statement, whose snapshot is taken after the locks were granted,
   gives back photos another worker stored meanwhile. The commit ends the locks; the claim rows
   say who holds what.
2. Read, decode and embed, outside any transaction (retrieval.indexing.photos), within the lease
   (CLETIR_INDEX_CLAIM_SECONDS).
3. Store (`store`, a short transaction). The batch's photo rows are locked `FOR KEY SHARE` in id
   order (the lock a foreign key check takes: it waits for a delete holding the photo, and a
   photo deleted meanwhile is not returned); the claims this lease still holds are deleted,
   RETURNING which (a lease that expired and was claimed again by another worker returns
   nothing); then the vectors of the photos that still exist and are still ours go in with one
   binary COPY (a staging table) and one `INSERT ... SELECT ... ON CONFLICT (asset, space) DO
   NOTHING`, the failures likewise. A photo deleted during the work leaves no vector and no
   error: it is gone before the lock, or its delete waits for this commit and removes the vector
   with the photo. The locks are taken in the order a delete takes them (photo rows by id, then
   the rows referring to them), so a store and a delete never deadlock.

Exactly once: vectors and claims are unique per (photo, space), and a store writes only what its
lease still holds. Kills: a killed worker leaves its claim rows and nothing else. A later
delivery of the same task (Celery hands a killed pool process's message back, same task id)
takes them back at once (`take_back`); claims whose holder vanished otherwise (a whole worker
with its message: the sweeper queues a new task) are claimed again once their lease has run out
(keep CLETIR_INDEX_CLAIM_SECONDS below CLETIR_PHOTO_WORK_STALE_SECONDS, the sweeper's wait).

Poison photos: a photo left behind by a dead holder is a *suspect*. Suspects are claimed one at a
time (`claim_suspect`) and indexed with nothing else in flight, so when the process dies again
the photo that killed it is known; `attempts` counts the deliveries, and a photo claimed more than
CLETIR_INDEX_MAX_ATTEMPTS times is marked failed with the reason instead of being delivered
again (a photo that raises is a plain failure: it never gets here).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Now

from assets.models import Asset

from .. import binary_copy
from ..models import AssetEmbedding, EmbeddingSpace, IndexingClaim, IndexingFailure
from .progress import pending_assets
from .signals import photos_indexed

logger = logging.getLogger(__name__)

CLAIMS = IndexingClaim._meta.db_table
VECTORS = AssetEmbedding._meta.db_table
FAILURES = IndexingFailure._meta.db_table
PHOTOS = Asset._meta.db_table
STAGING = "cletir_vectors_in"  # a temporary table per database session, always left empty


def poison_error(attempts: int) -> str:
    return (f"The worker process died each of the {attempts} times it indexed this photo (the last "
            f"{attempts - 1} with no other photo in flight), so it is not tried again; re-index it "
            "once the cause is fixed.")


@dataclass(frozen=True)
class Lease:
    """One delivery of an indexing task: what its claims are held by."""

    token: uuid.UUID
    task_id: str = ""

    @classmethod
    def new(cls, task_id: str | None = None) -> Lease:
        return cls(uuid.uuid4(), task_id or "")


@dataclass(frozen=True)
class ClaimedPhoto:
    asset_id: int
    path: str
    attempts: int = 1


@dataclass
class Stored:
    """What a store wrote: photos that got their vector, and photos marked failed."""

    indexed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _lease_expired() -> Q:
    return Q(claimed_at__isnull=True) | Q(claimed_at__lt=Now() - timedelta(seconds=settings.CLETIR_INDEX_CLAIM_SECONDS))


def _lock_pending(space: EmbeddingSpace, condition: Exists, count: int, after: int) -> list[tuple[int, str]]:
    """(id, file) of up to `count` pending photos past id `after` meeting `condition`, locked
    FOR NO KEY UPDATE SKIP LOCKED (inside a transaction), in id order."""
    photos: QuerySet[Asset] = pending_assets(space).filter(condition, pk__gt=after)
    return list(photos.select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("pk").values_list("pk", "file")[:count])


def _claimed(rows: list[tuple[int, str]], ids: set[int], attempts: int = 1) -> list[ClaimedPhoto]:
    return [ClaimedPhoto(pk, default_storage.path(name), attempts) for pk, name in rows if pk in ids]


def claim_fresh(space: EmbeddingSpace, lease: Lease, count: int, after: int = 0) -> list[ClaimedPhoto]:
    """Claim up to `count` pending photos that no one has claimed, past id `after`, in id order
    (a run passes the last id it claimed: the next claim does not scan the photos before it).
    Returns [] when none is left past `after`."""
    unclaimed = ~Exists(IndexingClaim.objects.filter(asset=OuterRef("pk"), space=space))
    while True:
        with transaction.atomic():
            rows = _lock_pending(space, unclaimed, count, after)
            if not rows:
                return []
            ids = [pk for pk, _ in rows]
            with connection.cursor() as cursor:
                cursor.execute(
                    f'INSERT INTO "{CLAIMS}" (asset_id, space_id, lease, task_id, claimed_at, attempts) '
                    "SELECT unnest(%s::bigint[]), %s, %s, %s, now(), 1 "
                    "ON CONFLICT (asset_id, space_id) DO NOTHING RETURNING asset_id",
                    [ids, space.pk, lease.token, lease.task_id],
                )
                claimed = {row[0] for row in cursor.fetchall()}
                # The locking query judged "pending" by the snapshot it started with: a photo
                # another worker stored and committed while it ran looked pending to it. This
                # statement's snapshot is newer than the locks and sees that worker's vector.
                cursor.execute(
                    f'DELETE FROM "{CLAIMS}" c WHERE c.space_id = %s AND c.lease = %s AND c.asset_id = ANY(%s) AND ('
                    f'EXISTS (SELECT 1 FROM "{VECTORS}" v WHERE v.asset_id = c.asset_id AND v.space_id = c.space_id) OR '
                    f'EXISTS (SELECT 1 FROM "{FAILURES}" f WHERE f.asset_id = c.asset_id AND f.space_id = c.space_id)) '
                    "RETURNING asset_id",
                    [space.pk, lease.token, ids],
                )
                claimed -= {row[0] for row in cursor.fetchall()}
        if claimed:
            return _claimed(rows, claimed)
        after = ids[-1]  # all taken by others meanwhile: look further


def claim_suspect(space: EmbeddingSpace, lease: Lease, after: int = 0) -> tuple[ClaimedPhoto | None, list[int]]:
    """Claim one photo left behind by a holder that died (its claim was given up, or its lease
    ran out), past id `after`: (the photo or None, the photos failed here as poison on the way).

    The delivery count goes up with the claim; a photo that has already been delivered
    CLETIR_INDEX_MAX_ATTEMPTS times is marked failed (`poison_error`) instead of claimed.
    """
    abandoned = Exists(IndexingClaim.objects.filter(_lease_expired(), asset=OuterRef("pk"), space=space))
    poisoned: list[int] = []
    while True:
        with transaction.atomic():
            rows = _lock_pending(space, abandoned, 1, after)
            if not rows:
                return None, poisoned
            (asset_id, name), = rows
            after = asset_id
            with connection.cursor() as cursor:
                cursor.execute(
                    f'UPDATE "{CLAIMS}" SET lease = %s, task_id = %s, claimed_at = now(), attempts = attempts + 1 '
                    "WHERE asset_id = %s AND space_id = %s "
                    "AND (claimed_at IS NULL OR claimed_at < now() - %s * interval '1 second') RETURNING attempts",
                    [lease.token, lease.task_id, asset_id, space.pk, settings.CLETIR_INDEX_CLAIM_SECONDS],
                )
                row = cursor.fetchone()
                if row is None:
                    continue  # claimed or stored by someone else since the locking query's snapshot
                attempts = row[0]
                if attempts <= settings.CLETIR_INDEX_MAX_ATTEMPTS:
                    return ClaimedPhoto(asset_id, default_storage.path(name), attempts), poisoned
                died = attempts - 1
                IndexingFailure.objects.bulk_create(
                    [IndexingFailure(asset_id=asset_id, space=space, error=poison_error(died))], ignore_conflicts=True)
                cursor.execute(f'DELETE FROM "{CLAIMS}" WHERE asset_id = %s AND space_id = %s', [asset_id, space.pk])
                poisoned.append(asset_id)
                logger.error("photo %s killed the worker indexing it %d times; marked failed in %s", asset_id, died, space)


def take_back(space: EmbeddingSpace, lease: Lease) -> int:
    """Give up the claims of earlier deliveries of this lease's task (they died: Celery
    delivers a task again when its process is killed): they become suspects, to be claimed now
    rather than when their lease runs out. Returns how many."""
    if not lease.task_id:
        return 0
    return (IndexingClaim.objects.filter(space=space, task_id=lease.task_id).exclude(lease=lease.token)
            .update(claimed_at=None))


def release(space: EmbeddingSpace, lease: Lease) -> int:
    """Drop this lease's remaining claims (the run stopped on an error: nothing of it is in
    flight any more), so their photos are pending for the next run at once. Returns how many."""
    return IndexingClaim.objects.filter(space=space, lease=lease.token).delete()[0]


def _vector_row(dim: int) -> np.dtype:
    """A staging row for binary COPY: asset id, then a halfvec (int16 dim, int16 unused, float16s)."""
    halfvec = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f2", (dim,))])
    return binary_copy.row_type([("asset", ">i8"), ("vector", halfvec)])


def store(space: EmbeddingSpace, lease: Lease, asset_ids: list[int], vectors: np.ndarray,
          failures: dict[int, str]) -> Stored:
    """Write the vectors (row i of `vectors` is photo asset_ids[i]'s) and failures of claimed
    photos, for those this lease still holds and that still exist; "photos indexed" is sent once
    the transaction commits. Returns what was written."""
    if len(asset_ids) != len(vectors):
        raise ValueError(f"{len(asset_ids)} photos but {len(vectors)} vectors")
    everything = sorted({*asset_ids, *failures})
    if not everything:
        return Stored()
    stored = Stored()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'SELECT id FROM "{PHOTOS}" WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE', [everything])
        present = [row[0] for row in cursor.fetchall()]
        cursor.execute(f'DELETE FROM "{CLAIMS}" WHERE space_id = %s AND lease = %s AND asset_id = ANY(%s) RETURNING asset_id',
                       [space.pk, lease.token, present])
        ours = {row[0] for row in cursor.fetchall()}
        keep = [i for i, asset_id in enumerate(asset_ids) if asset_id in ours]
        if keep:
            stored.indexed = _insert_vectors(cursor, space, [asset_ids[i] for i in keep], vectors[keep])
        failed = [IndexingFailure(asset_id=a, space=space, error=e) for a, e in failures.items() if a in ours]
        IndexingFailure.objects.bulk_create(failed, ignore_conflicts=True)
        stored.failed = [f.asset_id for f in failed]
        if stored.indexed:
            transaction.on_commit(partial(_announce_indexed, space.pk, stored.indexed), robust=True)
    return stored


def _insert_vectors(cursor, space: EmbeddingSpace, asset_ids: list[int], vectors: np.ndarray) -> list[int]:
    """COPY the vectors into the session's staging table and move them into the vector table,
    skipping any (photo, space) that has one already. Returns the photos whose vector went in."""
    row = _vector_row(vectors.shape[1])
    rows = binary_copy.new_rows(row, len(asset_ids))
    rows["asset"] = asset_ids
    rows["vector"]["dim"] = vectors.shape[1]
    rows["vector"]["values"] = vectors
    cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (asset_id bigint, vector halfvec) ON COMMIT DELETE ROWS")
    with cursor.cursor.copy(f"COPY {STAGING} (asset_id, vector) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.write(binary_copy.HEADER + rows.tobytes() + binary_copy.TRAILER)
    cursor.execute(
        f"WITH incoming AS (DELETE FROM {STAGING} RETURNING asset_id, vector) "
        f'INSERT INTO "{VECTORS}" (asset_id, space_id, vector, created_at) '
        "SELECT asset_id, %s, vector, now() FROM incoming "
        "ON CONFLICT (asset_id, space_id) DO NOTHING RETURNING asset_id",
        [space.pk],
    )
    return sorted(row[0] for row in cursor.fetchall())


def _announce_indexed(space_id: int, asset_ids: list[int]) -> None:
    for receiver, result in photos_indexed.send_robust(sender=EmbeddingSpace, space_id=space_id, asset_ids=asset_ids):
        if isinstance(result, Exception):
            logger.error("photos_indexed receiver %r failed for space %s", receiver, space_id, exc_info=result)
