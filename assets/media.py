"""Files under MEDIA_ROOT: every file belongs to a row, and every row's file exists.

Files are written under `MEDIA_ROOT/incoming/` first (the temporary area: our own `part-*`
files and Django's upload spools, FILE_UPLOAD_TEMP_DIR) and renamed into their final place with
os.replace, so a reader never sees half a file. Final names come from the models' upload_to
functions (ids and hashes, never a user's name) and are resolved with the storage's safe_join.

**Placing a file for a row** (`place_files`) goes in two steps, and a kill at any instant leaves
rows and files that agree, or a record that says what to clean up:

1. a PendingFile naming the final path is committed;
2. one transaction saves the caller's rows, renames the temporary files into place and deletes
   the PendingFile. The rows are saved *before* any file moves, so a unique constraint (a
   concurrent upload of the same photo) fails while the files are still temporary: the loser
   never touches the winner's file. A parent deleted meanwhile (a library, a photo) fails the
   commit (Django's foreign keys are checked when the transaction commits): the file that was
   moved is removed again at once, no row naming it.

Killed before step 2 commits, the PendingFile stays, with the file perhaps already in place and
no row naming it. **Removing the files of deleted rows** is the same in reverse: the transaction
that deletes the rows records PendingFiles for their files, and the files go once it commits.
`settle_pending` resolves PendingFiles: a file that no row and no other PendingFile names is
removed, then the record. The sweeper (assets.tasks.sweep_media_leftovers) settles those older
than CLETIR_MEDIA_GRACE_SECONDS and removes temporary files as old.

Why a journal rather than "rename after commit": a kill between the commit and the rename leaves
a row without its file, the worse side (a photo the library shows and nobody can open), and
finding leftovers of either kind would need a walk of the whole media root; with the journal,
recovery is a query on a small table. (`manage.py check_media` walks it anyway, as an audit.)

**Concurrency.** Settling checks "no row or other PendingFile names this file" and removes it
under an exclusive transaction-level advisory lock; step 1 takes the same lock shared. So a
settle never removes a file an upload is about to place: either the upload's PendingFile was
committed first (the settle sees it and keeps the file), or the settle finished first (the
upload moves its file in afterwards). Uploads never wait for each other, only for a settle batch.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, models, transaction
from django.utils import timezone

from .models import PendingFile

logger = logging.getLogger(__name__)

INCOMING_DIR = "incoming"
# pg_advisory_xact_lock(class, object): "cletir", "media files".
_LOCK_KEYS = (0x636C6574, 0x6D656469)
SETTLE_BATCH = 200
T = TypeVar("T")


def incoming_dir() -> Path:
    path = Path(default_storage.path(INCOMING_DIR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_incoming_file(suffix: str = "") -> tuple[int, Path]:
    """An empty temporary file in MEDIA_ROOT/incoming: (open fd, path). The caller removes it."""
    fd, name = tempfile.mkstemp(prefix="part-", suffix=suffix, dir=incoming_dir())
    return fd, Path(name)


def grace_period() -> timedelta:
    """How old a temporary file or a PendingFile must be before the sweeper takes it for a leftover."""
    return timedelta(seconds=settings.CLETIR_MEDIA_GRACE_SECONDS)


def place_files(files: Sequence[tuple[Path, str]], save_rows: Callable[[], T]) -> T:
    """Rename finished temporary files to their storage names together with `save_rows`.

    `files` pairs a temporary file (in incoming/) with its name relative to MEDIA_ROOT.
    `save_rows` runs inside the transaction before any file moves; whatever it raises (an
    IntegrityError of a lost race, a parent row deleted meanwhile) propagates with nothing
    placed. The temporary files are consumed either way. Call it outside any transaction: the
    PendingFile must commit on its own for a kill to be recoverable.
    """
    for _, name in files:
        default_storage.path(name)  # SuspiciousFileOperation for a name that escapes MEDIA_ROOT
    pending: list[int] = []
    try:
        pending = _record_pending([name for _, name in files])
        with transaction.atomic():
            result = save_rows()
            for temp, name in files:
                move_into_media(temp, name)
            PendingFile.objects.filter(pk__in=pending).delete()
    except BaseException:
        for temp, _ in files:
            remove_quietly(temp)
        settle_quietly(pending)
        raise
    return result


def record_removal(names: Iterable[str]) -> list[int]:
    """Inside the transaction that deletes rows: PendingFiles for their files (settle them on commit)."""
    rows = PendingFile.objects.bulk_create([PendingFile(name=name) for name in names if name])
    return [row.pk for row in rows]


def _record_pending(names: list[str]) -> list[int]:
    with transaction.atomic():
        _lock(shared=True)
        return record_removal(names)


def _lock(shared: bool) -> None:
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", _LOCK_KEYS)


def settle_pending(ids: Iterable[int]) -> int:
    """Resolve PendingFiles: remove each one's file unless a row or another PendingFile names
    it, then the record. Returns how many files were removed. A record whose placing transaction
    is still running (it holds the row) is left for later."""
    removed = 0
    ids = list(ids)
    for start in range(0, len(ids), SETTLE_BATCH):
        with transaction.atomic():
            _lock(shared=False)
            entries = list(
                PendingFile.objects.filter(pk__in=ids[start:start + SETTLE_BATCH]).select_for_update(skip_locked=True)
            )
            entry_ids = [entry.pk for entry in entries]
            removed += _remove_unclaimed({entry.name for entry in entries}, exclude_pending=entry_ids)[0]
            PendingFile.objects.filter(pk__in=entry_ids).delete()
    return removed


def remove_orphans(names: Iterable[str], modified_before: float) -> tuple[int, int]:
    """Remove files found without a row (check_media) if, looked at again under the lock, still
    no row or PendingFile names them and they were last modified before `modified_before` (a
    timestamp): (count, bytes)."""
    names = list(names)
    count = size = 0
    for start in range(0, len(names), SETTLE_BATCH):
        with transaction.atomic():
            _lock(shared=False)
            removed = _remove_unclaimed(set(names[start:start + SETTLE_BATCH]), modified_before=modified_before)
        count, size = count + removed[0], size + removed[1]
    return count, size


def _remove_unclaimed(
    names: set[str], exclude_pending: Sequence[int] = (), modified_before: float | None = None
) -> tuple[int, int]:
    """Under the exclusive lock: remove those of `names` that no row and no PendingFile (but
    `exclude_pending`, the ones being settled) names: (count, bytes)."""
    claimed = names_in_use(names) | set(
        PendingFile.objects.filter(name__in=names).exclude(pk__in=exclude_pending).values_list("name", flat=True)
    )
    count = size = 0
    for name in names - claimed:
        try:
            stat = os.stat(default_storage.path(name))
        except FileNotFoundError:
            continue
        if modified_before is not None and stat.st_mtime >= modified_before:
            continue
        if remove_media_file(name):
            count, size = count + 1, size + stat.st_size
    return count, size


def settle_quietly(ids: list[int]) -> None:
    """settle_pending when the database lets us; otherwise the sweeper does it later."""
    if not ids:
        return
    try:
        settle_pending(ids)
    except Exception:  # never mask what went wrong before (this runs in exception handlers)
        logger.warning("could not settle %d pending files now; the sweeper will", len(ids), exc_info=True)


def settle_stale_pending(now=None) -> int:
    """Settle every PendingFile older than the grace period (left by a killed process)."""
    cutoff = (now or timezone.now()) - grace_period()
    return settle_pending(PendingFile.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True))


def sweep_leftovers() -> dict[str, int]:
    """The periodic part (assets.tasks.sweep_media_leftovers): temporary files and PendingFiles
    older than the grace period. Cheap: one folder and one indexed query."""
    temporary, temporary_bytes = remove_stale_temporary_files()
    report = {"temporary_files_removed": temporary, "temporary_bytes_removed": temporary_bytes,
              "pending_files_removed": settle_stale_pending()}
    if temporary or report["pending_files_removed"]:
        logger.warning("media leftovers removed: %s", report)
    return report


def remove_stale_temporary_files(now: float | None = None) -> tuple[int, int]:
    """Remove files in incoming/ untouched for the grace period: (count, bytes).

    A file being written (an upload spooling, a photo being copied) has a fresh modification
    time, and ingestion touches an archive's spool while it reads it (assets.ingest)."""
    cutoff = (now or time.time()) - grace_period().total_seconds()
    count = size = 0
    for entry in _scan_files(incoming_dir()):
        stat = entry.stat(follow_symlinks=False)
        if stat.st_mtime < cutoff:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # its request finished meanwhile
                continue
            count += 1
            size += stat.st_size
    return count, size


def _scan_files(folder: Path) -> Iterator[os.DirEntry]:
    with os.scandir(folder) as entries:
        yield from (entry for entry in entries if entry.is_file(follow_symlinks=False))


def file_fields() -> list[tuple[type[models.Model], str]]:
    """(model, field name) of every FileField of every installed app: rows that name files."""
    return [
        (model, field.name)
        for model in apps.get_models()
        if model._meta.managed and not model._meta.proxy
        for field in model._meta.concrete_fields
        if isinstance(field, models.FileField)
    ]


def names_in_use(names: Iterable[str]) -> set[str]:
    """Which of these names a row of any model names as its file."""
    names = list(names)
    used: set[str] = set()
    for start in range(0, len(names), 1000):
        batch = names[start:start + 1000]
        for model, field in file_fields():
            used.update(model._base_manager.filter(**{f"{field}__in": batch}).values_list(field, flat=True))
    return used


def move_into_media(temp_path: Path, name: str) -> None:
    """Rename a finished temporary file to its storage `name` (relative to MEDIA_ROOT)."""
    # default_storage.path() raises SuspiciousFileOperation for a name that escapes MEDIA_ROOT.
    final = Path(default_storage.path(name))
    os.chmod(temp_path, 0o644)  # mkstemp makes 0600; the web server may run as another user
    for attempt in range(3):
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(temp_path, final)
            return
        except FileNotFoundError:
            # A settle removed the folder as it emptied, between mkdir and rename: make it again.
            if attempt == 2 or not temp_path.exists():
                raise


def remove_media_file(name: str) -> int:
    """Remove a stored file and the folders it leaves empty (up to its top folder); 1 if removed."""
    path = Path(default_storage.path(name))
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    root = Path(settings.MEDIA_ROOT).resolve()
    folder = path.parent
    while folder.parent.resolve() != root and folder.resolve() != root:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop
            break
        folder = folder.parent
    return 1


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
