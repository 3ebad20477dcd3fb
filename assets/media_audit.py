"""Auditing MEDIA_ROOT against the rows that name files (`manage.py check_media`).

Both sides of "every file belongs to a row, and every row's file exists", for every FileField
of every installed app, found through django.apps (`assets` imports no other app: photos and
renditions are its own, proxy images, search examples and aggregator weights are rows of
`retrieval`).

* **Orphan files**: files under a *managed* top folder that no row and no PendingFile names.
  Managed are the folders the FileFields' upload_to write into and the top folder of every
  name a row holds; a file elsewhere (a folder someone keeps under the media root) is counted as
  not managed, and never removed. `incoming/` is the temporary area, listed on its own.
* **Rows whose file is missing.**

`fix_media` removes orphan files and temporary files older than the grace period (a younger one
may be an upload in flight; each is looked at again, under the lock that placing files takes,
just before it goes), settles PendingFiles as old, and marks rows whose file is gone: a photo
(Asset) is failed with MISSING_FILE_ERROR, so it stays listed and the owner learns what
happened; a rendition row is deleted and the photo's renditions are queued again (they are
made from the original); a row of another app whose file field may be blank is cleared (an
embedding space's aggregator weights: search falls back to the mean of its proxies); any other
row (a proxy image, a search's example photo) is reported and left as it is: what it means is
its app's business.

The walk holds every stored name in memory (about 200 bytes each: ~600 MB for a million photos
with their two renditions) and stats every file once.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.apps import apps
from django.conf import settings
from django.db import transaction

from .media import INCOMING_DIR, file_fields, grace_period, remove_orphans, remove_stale_temporary_files, settle_stale_pending
from .models import ASSET_MEDIA_FOLDERS, Asset, PendingFile, Rendition
from .rendition_batches import schedule_renditions

MISSING_FILE_ERROR = (
    "The photo's file is missing from storage (found by check_media). Restore the file from a backup, "
    "or delete this photo and upload it again."
)


@dataclass(frozen=True)
class MediaFile:
    name: str  # relative to MEDIA_ROOT
    size: int
    modified: float  # a timestamp


@dataclass(frozen=True)
class MissingFile:
    model: str  # app_label.Model
    pk: object
    field: str
    name: str


@dataclass
class MediaAudit:
    root: Path
    named_files: int = 0  # files that rows name and that exist
    named_bytes: int = 0
    orphans: list[MediaFile] = field(default_factory=list)
    missing: list[MissingFile] = field(default_factory=list)
    temporary: list[MediaFile] = field(default_factory=list)
    pending: int = 0  # names with a PendingFile: being placed or removed right now, or left by a kill
    unmanaged: Counter = field(default_factory=Counter)  # top folder -> files never looked at

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.missing


@dataclass
class MediaFix:
    orphans_removed: int = 0
    orphan_bytes_removed: int = 0
    orphans_kept: int = 0  # younger than the grace period, or claimed meanwhile
    temporary_removed: int = 0
    temporary_bytes_removed: int = 0
    pending_files_removed: int = 0
    assets_failed: int = 0
    renditions_deleted: int = 0
    fields_cleared: int = 0
    rows_left: list[MissingFile] = field(default_factory=list)


def managed_folders() -> set[str]:
    """Top folders that FileFields write into, from their upload_to (a callable is tried on an
    empty instance; one that needs related rows tells nothing)."""
    folders = set(ASSET_MEDIA_FOLDERS)
    for model, name in file_fields():
        try:
            generated = model._meta.get_field(name).generate_filename(model(), "file.bin")
        except Exception:
            continue
        folders.add(_top(generated))
    folders.discard("")
    return folders


def audit_media() -> MediaAudit:
    root = Path(settings.MEDIA_ROOT)
    audit = MediaAudit(root=root)
    # PendingFiles first: a file being placed now is then named by one of the two reads.
    pending = set(PendingFile.objects.values_list("name", flat=True))
    audit.pending = len(pending)
    owners: dict[str, tuple[str, object, str]] = {}
    for model, name in file_fields():
        rows = model._base_manager.exclude(**{name: ""}).values_list("pk", name)
        for pk, stored in rows.iterator(chunk_size=5000):
            owners[stored] = (model._meta.label, pk, name)
    managed = managed_folders() | {_top(name) for name in owners} | {_top(name) for name in pending}
    unseen = set(owners)
    for folder, dirnames, filenames in os.walk(root):
        relative = PurePosixPath(Path(folder).relative_to(root).as_posix())
        if relative == PurePosixPath("."):
            relative = PurePosixPath()
            dirnames[:] = [d for d in dirnames if d != INCOMING_DIR]
        for filename in filenames:
            name = str(relative / filename)
            try:
                stat = os.stat(os.path.join(folder, filename))
            except FileNotFoundError:  # removed while we walked
                continue
            if name in owners:
                unseen.discard(name)
                audit.named_files += 1
                audit.named_bytes += stat.st_size
            elif name in pending:
                continue
            elif _top(name) in managed:
                audit.orphans.append(MediaFile(name, stat.st_size, stat.st_mtime))
            else:
                audit.unmanaged[_top(name) or "."] += 1
    audit.missing = [MissingFile(*owners[name], name) for name in sorted(unseen)]
    incoming = root / INCOMING_DIR
    if incoming.is_dir():
        for entry in os.scandir(incoming):
            if entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                audit.temporary.append(MediaFile(f"{INCOMING_DIR}/{entry.name}", stat.st_size, stat.st_mtime))
    audit.orphans.sort(key=lambda f: f.name)
    audit.temporary.sort(key=lambda f: f.name)
    return audit


def fix_media(audit: MediaAudit) -> MediaFix:
    fix = MediaFix()
    fix.pending_files_removed = settle_stale_pending()
    fix.temporary_removed, fix.temporary_bytes_removed = remove_stale_temporary_files()
    cutoff = time.time() - grace_period().total_seconds()
    fix.orphans_removed, fix.orphan_bytes_removed = remove_orphans([f.name for f in audit.orphans], cutoff)
    fix.orphans_kept = len(audit.orphans) - fix.orphans_removed
    still_missing = [row for row in audit.missing if not os.path.exists(audit.root / row.name)]
    for row in still_missing:
        model = apps.get_model(row.model)
        if model is Asset:
            fix.assets_failed += Asset.objects.filter(pk=row.pk, file=row.name).update(
                status=Asset.Status.FAILED, error=MISSING_FILE_ERROR
            )
        elif model is Rendition:
            fix.renditions_deleted += _delete_rendition(row)
        elif model._meta.get_field(row.field).blank:
            fix.fields_cleared += model._base_manager.filter(pk=row.pk, **{row.field: row.name}).update(**{row.field: ""})
        else:
            fix.rows_left.append(row)
    return fix


def _delete_rendition(row: MissingFile) -> int:
    """Delete a rendition row whose file is gone; its photo waits for renditions again (pending),
    and the rendition task is queued to make the missing one."""
    asset_id = Rendition.objects.filter(pk=row.pk).values_list("asset_id", flat=True).first()
    deleted, _ = Rendition.objects.filter(pk=row.pk, file=row.name).delete()
    if deleted and asset_id is not None:
        Asset.objects.filter(pk=asset_id, status=Asset.Status.READY).update(status=Asset.Status.PENDING)
        transaction.on_commit(schedule_renditions)
    return deleted


def _top(name: str) -> str:
    parts = PurePosixPath(name).parts
    return parts[0] if len(parts) > 1 else ""
