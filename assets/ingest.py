"""Adding photos to a library: the one service that uploads, the API and `import_folder` call.

Every file offered ends in exactly one outcome (`IngestOutcome.status`); nothing is lost silently:

* `stored`: a new Asset (`asset_id`);
* `duplicate`: the same bytes are already in this library; `asset_id` names that photo;
* `rejected`: the file itself is refused, with a reason code (RejectedFile.Reason) and a
  message, also kept as a RejectedFile row for the library page;
* `skipped`: an archive entry that is desktop metadata, not a photo (`__MACOSX/`, `.DS_Store`,
  `Thumbs.db`, hidden files): reason `not_a_photo`;
* `failed`: the server could not finish the file and kept nothing of it; send it again. Reason
  `server_error` (a database error or another failure), `library_deleted` (the library was
  deleted meanwhile) or `not_received` (the request ended before the file arrived whole; the
  API adds these, see assets.uploads). After a `server_error` or `library_deleted`, the files
  that follow are not tried and get the same reason: they would fail the same way.

A photo's embedded XMP, IPTC and EXIF fields (title, caption, keywords, camera, position, ...:
assets.metadata) are stored with it; a block that cannot be read never refuses the photo, it is
named in the photo's `metadata_error`.

Entries of an archive carry `archive`, the archive's name; their refusals name it
(`photos.zip: dir/x.jpg`) on the library page and in `import_folder`'s output.

One pass over the bytes: the file is streamed into MEDIA_ROOT/incoming while its SHA-256 is
computed and its size bounded, validated there, then placed under its content-addressed name
together with its row (assets.media.place_files: a kill at any instant leaves both or neither).
The unique constraint on (library, sha256) is the arbiter between concurrent uploads of the
same photo: the row is inserted before the file moves, so the loser gets an IntegrityError
with its file still temporary, and reports a duplicate of the winner. A library deleted
meanwhile fails the commit on the photo's foreign key (checked at commit; the delete holds the
library's row lock until it commits, so the check waits for it): the file placed for it is
removed again and the outcome says `library_deleted`. Work that follows a
stored photo (thumbnails, the `asset_stored` signal that retrieval turns into embedding) is
queued with transaction.on_commit and passes the id only.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import IO, Literal

from django.conf import settings
from django.db import IntegrityError, transaction

from . import archives
from .imaging import FileRejected, inspect_image, too_large
from .media import new_incoming_file, place_files, remove_quietly
from .models import Asset, Library, RejectedFile, asset_upload_path
from .signals import asset_stored

logger = logging.getLogger(__name__)

STORED, DUPLICATE, REJECTED, SKIPPED, FAILED = "stored", "duplicate", "rejected", "skipped", "failed"
STATUSES = (STORED, DUPLICATE, REJECTED, SKIPPED, FAILED)
# Reasons of `failed` outcomes: the server's side, not the file's.
SERVER_ERROR, LIBRARY_DELETED, NOT_RECEIVED = "server_error", "library_deleted", "not_received"
NOT_A_PHOTO = "not_a_photo"
DUPLICATE_MESSAGE = "This photo is already in the library."
SKIPPED_MESSAGE = "Desktop metadata or a hidden file (__MACOSX/, .DS_Store, Thumbs.db), not a photo: skipped."
FAILED_MESSAGES = {
    SERVER_ERROR: "The server failed while storing this file and kept nothing of it; send it again.",
    LIBRARY_DELETED: "The library was deleted during the upload; this file was not stored.",
    NOT_RECEIVED: "The request ended before this file had fully arrived; it was not stored. Send it again.",
}
NOT_ATTEMPTED_MESSAGES = {
    SERVER_ERROR: "Not stored: the upload stopped at an earlier file because of a server error. Send it again.",
    LIBRARY_DELETED: "Not stored: the library was deleted during the upload.",
}
CHUNK_BYTES = 1024 * 1024
NAME_MAX = Asset._meta.get_field("original_name").max_length
# How often a spool that is being read is touched, so the sweeper never takes it for a leftover.
KEEP_ALIVE_SECONDS = 60.0
_FOREIGN_KEY_VIOLATION = "23503"


class LibraryDeleted(Exception):
    """The library went away while its files were being stored."""


@dataclass
class IngestOutcome:
    name: str
    status: Literal["stored", "duplicate", "rejected", "skipped", "failed"]
    asset_id: int | None = None
    reason: str | None = None
    message: str | None = None
    archive: str | None = None  # the archive the file came from

    @property
    def label(self) -> str:
        """The name to show people: `photos.zip: dir/x.jpg` for an archive entry."""
        return f"{self.archive}: {self.name}" if self.archive else self.name

    def as_dict(self) -> dict:
        return asdict(self)


def failed(name: str, reason: str, archive: str | None = None) -> IngestOutcome:
    return IngestOutcome(name, FAILED, None, reason, FAILED_MESSAGES[reason], archive)


class Ingestion:
    """The files of one request (or one import run) into one library.

    After a failure that would fail every later file too (`server_error`, `library_deleted`:
    `stopped`), the files that follow are answered without being tried.
    """

    def __init__(self, library: Library, uploaded_by=None):
        self.library = library
        self.uploaded_by = _user_or_none(uploaded_by)
        self.stopped: IngestOutcome | None = None

    def upload(self, fileobj: IO[bytes], original_name: str) -> list[IngestOutcome]:
        """One uploaded file; a zip archive expands into one outcome per entry."""
        if self.stopped is None and archives.is_zip(fileobj, original_name):
            return self._archive(fileobj, original_name)
        return [self._guarded(original_name, None, lambda: ingest_file(self.library, fileobj, original_name, self.uploaded_by))]

    def _archive(self, fileobj: IO[bytes], name: str) -> list[IngestOutcome]:
        spooled: Path | None = None
        spooled_file = None
        try:
            if not _seekable(fileobj):
                # zipfile needs to seek (the directory is at the end); keep the copy under MEDIA_ROOT.
                spooled, _, _ = _spool(fileobj, settings.CLETIR_MAX_ARCHIVE_BYTES)
                fileobj = spooled_file = open(spooled, "rb")
            keep_alive = _KeepAlive(spooled or _temporary_path(fileobj))
            with archives.ZipArchive(fileobj) as archive:
                outcomes = []
                for entry in archive.entries():
                    keep_alive()
                    outcomes.append(self._entry(archive, entry, name))
        except FileRejected as rejection:  # the archive as a whole: damaged, over the limits
            return [self._refuse(name, None, rejection)]
        except Exception:  # spooling the archive (a full disk, ...): nothing of it was stored
            logger.exception("reading archive %r for library %s failed", name, self.library.pk)
            return [self._stop(failed(name, SERVER_ERROR))]
        finally:
            if spooled_file is not None:
                spooled_file.close()
            remove_quietly(spooled)
        if all(outcome.status == SKIPPED for outcome in outcomes):
            return [self._refuse(name, None, archives.empty_archive()), *outcomes]
        return outcomes

    def _entry(self, archive: archives.ZipArchive, entry: archives.ArchiveEntry, archive_name: str) -> IngestOutcome:
        if entry.skipped:
            return IngestOutcome(entry.name, SKIPPED, None, NOT_A_PHOTO, SKIPPED_MESSAGE, archive_name)
        if entry.rejection is not None:
            return self._refuse(entry.name, archive_name, entry.rejection)

        def store() -> IngestOutcome:
            with archive.open(entry) as stream:
                return ingest_file(self.library, stream, entry.name, self.uploaded_by, archive=archive_name)

        return self._guarded(entry.name, archive_name, store)

    def _refuse(self, name: str, archive: str | None, rejection: FileRejected) -> IngestOutcome:
        return self._guarded(name, archive, lambda: _reject(self.library, name, rejection, self.uploaded_by, archive))

    def _guarded(self, name: str, archive: str | None, work: Callable[[], IngestOutcome]) -> IngestOutcome:
        if self.stopped is not None:
            reason = self.stopped.reason
            return IngestOutcome(name, FAILED, None, reason, NOT_ATTEMPTED_MESSAGES[reason], archive)
        try:
            return work()
        except LibraryDeleted:
            return self._stop(failed(name, LIBRARY_DELETED, archive))
        except Exception:
            logger.exception("storing %r in library %s failed", name, self.library.pk)
            return self._stop(failed(name, SERVER_ERROR, archive))

    def _stop(self, outcome: IngestOutcome) -> IngestOutcome:
        self.stopped = outcome
        return outcome


def ingest_upload(library: Library, fileobj: IO[bytes], original_name: str, uploaded_by=None) -> list[IngestOutcome]:
    """Ingest one uploaded file; a zip archive expands into one outcome per entry."""
    return Ingestion(library, uploaded_by).upload(fileobj, original_name)


def ingest_file(
    library: Library, fileobj: IO[bytes], original_name: str, uploaded_by=None, archive: str | None = None
) -> IngestOutcome:
    """Store one image file in `library` unless it is a duplicate or is refused.

    Raises LibraryDeleted when the library went away meanwhile, and database errors as they are
    (Ingestion turns both into `failed` outcomes)."""
    name = _clean_name(original_name)
    uploaded_by = _user_or_none(uploaded_by)
    limit = settings.CLETIR_MAX_UPLOAD_BYTES
    declared = getattr(fileobj, "size", None)
    if isinstance(declared, int) and declared > limit:  # Django's UploadedFile knows its size
        return _reject(library, name, too_large(limit), uploaded_by, archive)
    temp: Path | None = None
    try:
        try:
            temp, sha256, size = _spool(fileobj, limit)
        except FileRejected as rejection:
            return _reject(library, name, rejection, uploaded_by, archive)
        existing_id = _existing_asset_id(library, sha256)
        if existing_id is not None:
            return IngestOutcome(name, DUPLICATE, existing_id, message=DUPLICATE_MESSAGE, archive=archive)
        try:
            info = inspect_image(temp)
        except FileRejected as rejection:
            return _reject(library, name, rejection, uploaded_by, archive)
        asset = Asset(
            library=library, uploaded_by=uploaded_by, original_name=name, sha256=sha256, size_bytes=size,
            width=info.width, height=info.height, format=info.format, taken_at=info.taken_at,
            **info.metadata.asset_fields(),
        )
        # The stored name comes from the library id, the hash and the detected format, never
        # from the uploaded name; the same photo always lands on the same path.
        asset.file.name = asset_upload_path(asset, f"photo.{info.suffix}")
        placing, temp = temp, None  # place_files consumes the temporary file, placed or not
        try:
            place_files([(placing, asset.file.name)], partial(_save_stored, asset))
        except IntegrityError as exc:
            _raise_if_library_deleted(library, exc)
            # Lost a race with a concurrent upload of the same bytes: the winner's row and file stay.
            existing_id = _existing_asset_id(library, sha256)
            if existing_id is None:
                raise
            return IngestOutcome(name, DUPLICATE, existing_id, message=DUPLICATE_MESSAGE, archive=archive)
        return IngestOutcome(name, STORED, asset.pk, archive=archive)
    finally:
        remove_quietly(temp)


def _save_stored(asset: Asset) -> None:
    asset.save()
    transaction.on_commit(_queue_renditions, robust=True)
    transaction.on_commit(partial(_announce_stored, asset.pk), robust=True)


def _raise_if_library_deleted(library: Library, exc: IntegrityError) -> None:
    if getattr(exc.__cause__, "sqlstate", None) == _FOREIGN_KEY_VIOLATION and not Library.objects.filter(pk=library.pk).exists():
        raise LibraryDeleted() from exc


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


class _KeepAlive:
    """Touches a spool file every KEEP_ALIVE_SECONDS while it is read (its age is how the
    sweeper tells a leftover from a file in use)."""

    def __init__(self, path: str | Path | None):
        self.path = path
        self.last = time.monotonic()

    def __call__(self) -> None:
        if self.path is None or time.monotonic() - self.last < KEEP_ALIVE_SECONDS:
            return
        self.last = time.monotonic()
        try:
            os.utime(self.path)
        except OSError:
            pass


def _temporary_path(fileobj) -> str | None:
    # Django's TemporaryUploadedFile: the request's spool in FILE_UPLOAD_TEMP_DIR.
    path_of = getattr(fileobj, "temporary_file_path", None)
    return path_of() if callable(path_of) else None


def _existing_asset_id(library: Library, sha256: str) -> int | None:
    return Asset.objects.filter(library=library, sha256=sha256).values_list("id", flat=True).first()


def _reject(
    library: Library, name: str, rejection: FileRejected, uploaded_by, archive: str | None = None
) -> IngestOutcome:
    name = _clean_name(name)
    label = _clean_name(f"{archive}: {name}" if archive else name)
    try:
        with transaction.atomic():  # a savepoint: the check below must still be able to query
            RejectedFile.objects.create(
                library=library, uploaded_by=_user_or_none(uploaded_by), original_name=label,
                reason=rejection.reason, message=rejection.message,
            )
    except IntegrityError as exc:
        _raise_if_library_deleted(library, exc)
        raise
    return IngestOutcome(name, REJECTED, None, rejection.reason, rejection.message, archive)


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
