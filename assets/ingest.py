"""Adding photos to a library: the one service that uploads, the API and `import_folder` call.

Every file offered ends in exactly one outcome: `stored` (a new Asset), `duplicate` (the same
bytes are already in this library; the outcome names that asset) or `rejected` (a reason code
and a message, also kept as a RejectedFile row for the library page). Nothing is lost silently.

One pass over the bytes: the file is streamed into MEDIA_ROOT/incoming while its SHA-256 is
computed and its size bounded, validated there, then renamed into its content-addressed place.
The unique constraint on (library, sha256) is the arbiter between concurrent uploads of the
same photo: the loser gets an IntegrityError and reports a duplicate of the winner. Work that
follows a stored photo (thumbnails, the `asset_stored` signal that retrieval turns into
embedding) is queued with transaction.on_commit and passes the id only.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import IO, Literal

from django.conf import settings
from django.db import IntegrityError, transaction

from . import archives
from .imaging import FileRejected, inspect_image, too_large
from .media import move_into_media, new_incoming_file, remove_quietly
from .models import Asset, Library, RejectedFile, asset_upload_path
from .signals import asset_stored

logger = logging.getLogger(__name__)

STORED, DUPLICATE, REJECTED = "stored", "duplicate", "rejected"
DUPLICATE_MESSAGE = "This photo is already in the library."
CHUNK_BYTES = 1024 * 1024
NAME_MAX = Asset._meta.get_field("original_name").max_length


@dataclass
class IngestOutcome:
    name: str
    status: Literal["stored", "duplicate", "rejected"]
    asset_id: int | None = None
    reason: str | None = None
    message: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def ingest_upload(library: Library, fileobj: IO[bytes], original_name: str, uploaded_by=None) -> list[IngestOutcome]:
    """Ingest one uploaded file; a zip archive expands into one outcome per entry."""
    uploaded_by = _user_or_none(uploaded_by)
    if not archives.is_zip(fileobj, original_name):
        return [ingest_file(library, fileobj, original_name, uploaded_by)]
    spooled: Path | None = None
    spooled_file = None
    try:
        if not _seekable(fileobj):
            # zipfile needs to seek (the directory is at the end); keep the copy under MEDIA_ROOT.
            spooled, _, _ = _spool(fileobj, settings.CLETIR_MAX_ARCHIVE_BYTES)
            fileobj = spooled_file = open(spooled, "rb")
        with archives.ZipArchive(fileobj) as archive:
            outcomes = []
            for entry in archive.entries():
                if entry.rejection is not None:
                    outcomes.append(_reject(library, entry.name, entry.rejection, uploaded_by))
                    continue
                with archive.open(entry) as stream:
                    outcomes.append(ingest_file(library, stream, entry.name, uploaded_by))
            if not outcomes:
                raise archives.empty_archive()
            return outcomes
    except FileRejected as rejection:  # the archive as a whole: damaged, empty or over the limits
        return [_reject(library, original_name, rejection, uploaded_by)]
    finally:
        if spooled_file is not None:
            spooled_file.close()
        remove_quietly(spooled)


def ingest_file(library: Library, fileobj: IO[bytes], original_name: str, uploaded_by=None) -> IngestOutcome:
    """Store one image file in `library` unless it is a duplicate or is refused."""
    name = _clean_name(original_name)
    uploaded_by = _user_or_none(uploaded_by)
    limit = settings.CLETIR_MAX_UPLOAD_BYTES
    declared = getattr(fileobj, "size", None)
    if isinstance(declared, int) and declared > limit:  # Django's UploadedFile knows its size
        return _reject(library, name, too_large(limit), uploaded_by)
    temp: Path | None = None
    try:
        try:
            temp, sha256, size = _spool(fileobj, limit)
        except FileRejected as rejection:
            return _reject(library, name, rejection, uploaded_by)
        existing_id = _existing_asset_id(library, sha256)
        if existing_id is not None:
            return IngestOutcome(name, DUPLICATE, existing_id, message=DUPLICATE_MESSAGE)
        try:
            info = inspect_image(temp)
        except FileRejected as rejection:
            return _reject(library, name, rejection, uploaded_by)
        asset = Asset(
            library=library, uploaded_by=uploaded_by, original_name=name, sha256=sha256, size_bytes=size,
            width=info.width, height=info.height, format=info.format, taken_at=info.taken_at,
        )
        # The stored name comes from the library id, the hash and the detected format, never
        # from the uploaded name; the same photo always lands on the same path.
        asset.file.name = asset_upload_path(asset, f"photo.{info.suffix}")
        move_into_media(temp, asset.file.name)
        temp = None
        try:
            with transaction.atomic():
                asset.save()
                transaction.on_commit(_queue_renditions, robust=True)
                transaction.on_commit(partial(_announce_stored, asset.pk), robust=True)
        except IntegrityError:
            # Lost a race with a concurrent upload of the same bytes. The file on disk is the
            # winner's too (same content, same name), so it stays.
            existing_id = _existing_asset_id(library, sha256)
            if existing_id is None:
                raise
            return IngestOutcome(name, DUPLICATE, existing_id, message=DUPLICATE_MESSAGE)
        return IngestOutcome(name, STORED, asset.pk)
    finally:
        remove_quietly(temp)


def _spool(fileobj: IO[bytes], limit: int) -> tuple[Path, str, int]:
    """Copy the stream into MEDIA_ROOT/incoming: (path, sha256 hex, size). Stops past `limit`."""
    digest = hashlib.sha256()
    size = 0
    fd, path = new_incoming_file()
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := fileobj.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        remove_quietly(path)
        raise
    return path, digest.hexdigest(), size


def _existing_asset_id(library: Library, sha256: str) -> int | None:
    return Asset.objects.filter(library=library, sha256=sha256).values_list("id", flat=True).first()


def _reject(library: Library, name: str, rejection: FileRejected, uploaded_by) -> IngestOutcome:
    name = _clean_name(name)
    RejectedFile.objects.create(
        library=library, uploaded_by=uploaded_by, original_name=name,
        reason=rejection.reason, message=rejection.message,
    )
    return IngestOutcome(name, REJECTED, None, rejection.reason, rejection.message)


def _user_or_none(user):
    # A view may pass request.user as it is; an anonymous user is recorded as nobody.
    return user if getattr(user, "is_authenticated", False) else None


def _clean_name(name: str) -> str:
    name = (name or "").replace("\x00", "").strip()
    return name[-NAME_MAX:]  # keep the end: the file name matters more than deep folders


def _seekable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, ValueError):
        return False


def _queue_renditions() -> None:
    from .rendition_batches import schedule_renditions  # imports the tasks: the app is configured by now

    schedule_renditions()  # one task for every photo waiting, queued unless one is already


def _announce_stored(asset_id: int) -> None:
    for receiver, result in asset_stored.send_robust(sender=Asset, asset_id=asset_id):
        if isinstance(result, Exception):
            logger.error("asset_stored receiver %r failed for asset %s", receiver, asset_id, exc_info=result)
