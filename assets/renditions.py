"""A photo's renditions (thumbnail, preview): claiming the photo, making the files, recording them.

Claims: two workers never make one photo's renditions at once, and no lock is held while a photo
renders (a large one takes seconds). `claim_photos` is a short transaction: it locks pending
photos with `FOR UPDATE SKIP LOCKED` (a concurrent claimer skips them rather than waiting) and
stamps them with the worker's claim token and the time, then commits. Rendering then runs with
no transaction open. The token is the Celery task's id, which a task keeps across its retries
and redeliveries, so a task retried after a database outage takes its own claims back at once;
a claim older than CLETIR_PHOTO_WORK_STALE_SECONDS belongs to a worker that died and is free
for anyone (assets.sweeps queues the work again).

Recording (`record_renditions`) writes each file into MEDIA_ROOT/incoming first, then places the
files together with their rows (`assets.media.place_files`: a PendingFile naming them commits
first, so a kill at any instant leaves files and rows both or neither). The placing transaction
locks the photo's row and checks the photo still exists: a photo (or library) deleted while it
rendered is gone when the lock is granted, so nothing is placed and nothing is left behind. (The
other side of that race: a delete locks the photo rows before it lists the files to remove, so
it sees every rendition recorded before it.) File names derive from the photo's hash and the
rendition name.

Idempotent by state: renditions a photo already has (one row per (asset, name), unique) are not
made again, so a retried or duplicated task does no work twice. A photo whose renditions cannot
be made is marked failed with the error; only database errors propagate, for the task to retry.
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from .media import new_incoming_file, place_files, remove_quietly
from .models import Asset, Rendition, rendition_upload_path
from .rendering import EncodedRendition, RenditionSpec, render, spec_from_settings

logger = logging.getLogger(__name__)

# Worth a retry: the database went away for a moment. Everything else (a damaged file, a
# missing file, a decoder error) fails the same way the next time and marks the photo failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
ERROR_PREFIX = "Renditions failed: "


def rendition_specs() -> list[RenditionSpec]:
    """The renditions every photo gets (settings.CLETIR_RENDITIONS), largest first."""
    specs = [spec_from_settings(name, entry) for name, entry in settings.CLETIR_RENDITIONS.items()]
    return sorted(specs, key=lambda spec: -spec.max_side)


def new_claim() -> str:
    """A claim token for work that runs outside a Celery task (a direct call, a benchmark)."""
    return uuid.uuid4().hex


def claim_expiry() -> timedelta:
    return timedelta(seconds=settings.CLETIR_PHOTO_WORK_STALE_SECONDS)


def unclaimed(now) -> Q:
    """Photos nobody is working on: never claimed, or claimed by a worker that died."""
    return Q(renditions_claimed_at__isnull=True) | Q(renditions_claimed_at__lt=now - claim_expiry())


def claim_photos(claim: str, limit: int, asset_ids: list[int] | None = None) -> list[int]:
    """Claim up to `limit` photos waiting for renditions (of `asset_ids` when given), oldest
    first: those nobody works on, and those this claim already holds. Returns their ids."""
    now = timezone.now()
    waiting = Asset.objects.filter(status=Asset.Status.PENDING).filter(unclaimed(now) | Q(renditions_claim=claim))
    if asset_ids is not None:
        waiting = waiting.filter(pk__in=asset_ids)
    with transaction.atomic():
        # Read committed + FOR UPDATE re-checks the WHERE on the newest row version after the
        # lock: a photo another worker claimed and committed meanwhile no longer matches.
        ids = list(waiting.select_for_update(skip_locked=True).order_by("pk").values_list("pk", flat=True)[:limit])
        Asset.objects.filter(pk__in=ids).update(renditions_claim=claim, renditions_claimed_at=now)
    return ids


@dataclass(frozen=True)
class RenditionJob:
    """What rendering one claimed photo needs, read before any pixel work starts."""

    asset_id: int
    path: str
    stored_format: str
    specs: list[RenditionSpec]


def jobs_for(asset_ids: list[int]) -> list[RenditionJob]:
    """The missing renditions of each photo (none for a photo deleted since its claim)."""
    specs = rendition_specs()
    existing: dict[int, set[str]] = {}
    for asset_id, name in Rendition.objects.filter(asset_id__in=asset_ids).values_list("asset_id", "name"):
        existing.setdefault(asset_id, set()).add(name)
    rows = Asset.objects.filter(pk__in=asset_ids).order_by("pk").values_list("pk", "file", "format")
    return [
        RenditionJob(pk, default_storage.path(name), stored_format,
                     [spec for spec in specs if spec.name not in existing.get(pk, set())])
        for pk, name, stored_format in rows
    ]


def render_job(job: RenditionJob) -> list[EncodedRendition]:
    """The job's files, encoded (pure: no database, no media writes; safe in a thread)."""
    return render(job.path, job.stored_format, job.specs)


def finish_job(job: RenditionJob, encoded: list[EncodedRendition] | None, error: BaseException | None) -> list[str] | None:
    """Record a rendered job, or mark its photo failed with the error (rendering's, or one met
    while writing the files). Returns the names made, None when the photo was marked failed;
    database errors propagate."""
    if error is None:
        try:
            return record_renditions(job.asset_id, encoded or [])
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            error = exc
    if isinstance(error, TRANSIENT_ERRORS):
        raise error
    record_failure(job.asset_id, error)
    return None


def make_renditions(asset_id: int, claim: str | None = None) -> list[str]:
    """Make one photo's missing renditions now; return the names made (empty when none were
    due, when the photo is gone or failed, or while another worker holds it)."""
    claim = claim or new_claim()
    jobs = jobs_for(claim_photos(claim, limit=1, asset_ids=[asset_id]))
    if not jobs:
        return []
    try:
        encoded, error = render_job(jobs[0]), None
    except Exception as exc:
        encoded, error = None, exc
    return finish_job(jobs[0], encoded, error) or []


class PhotoDeleted(Exception):
    """The photo went away while its renditions were being made."""


def record_renditions(asset_id: int, encoded: list[EncodedRendition]) -> list[str]:
    """Place the files and create their rows if the photo still exists; mark it ready."""
    photo = Asset.objects.filter(pk=asset_id).only("library_id", "sha256").first()
    if photo is None:
        return []  # deleted while it rendered
    existing = set(Rendition.objects.filter(asset_id=asset_id).values_list("name", flat=True))
    encoded = [rendition for rendition in encoded if rendition.name not in existing]
    rows: list[Rendition] = []
    files: list[tuple[Path, str]] = []
    try:
        for rendition in encoded:
            fd, temp = new_incoming_file()
            with os.fdopen(fd, "wb") as out:
                out.write(rendition.data)
            row = Rendition(asset=photo, name=rendition.name, width=rendition.width, height=rendition.height)
            row.file.name = rendition_upload_path(row, f"r.{rendition.suffix}")
            rows.append(row)
            files.append((temp, row.file.name))

        def save_rows() -> None:
            asset = Asset.objects.select_for_update().filter(pk=asset_id).first()
            if asset is None:
                raise PhotoDeleted(asset_id)  # deleted while it rendered: nothing is placed
            for row in rows:
                row.save()
            # Ready once every rendition exists.
            Asset.objects.filter(pk=asset_id).update(
                status=Asset.Status.READY if asset.status == Asset.Status.PENDING else asset.status,
                renditions_claim="", renditions_claimed_at=None,
            )

        place_files(files, save_rows)
    except PhotoDeleted:
        return []
    except IntegrityError:
        # Made meanwhile by a worker whose claim had expired (its rows and files stay), or the
        # photo was deleted after the lock was granted (its foreign key fails the commit): either
        # way none of these files was placed.
        return []
    finally:
        for temp, _ in files:
            remove_quietly(temp)  # place_files consumed them; these are the ones written before a failure
    return [row.name for row in rows]


def record_failure(asset_id: int, error: BaseException) -> None:
    logger.warning("renditions of asset %s failed", asset_id, exc_info=error)
    message = f"{ERROR_PREFIX}{error or type(error).__name__}"
    Asset.objects.filter(pk=asset_id, status=Asset.Status.PENDING).update(
        status=Asset.Status.FAILED, error=message, renditions_claim="", renditions_claimed_at=None,
    )
