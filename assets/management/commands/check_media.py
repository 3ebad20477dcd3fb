"""`manage.py check_media [--fix] [--list N]`: files without rows and rows without files.

Reports both sides for every model with a FileField (assets.media_audit): orphan files (count,
size, paths), rows whose file is missing, temporary files in incoming/ and files being placed
or removed. `--fix` removes orphan and temporary files older than CLETIR_MEDIA_GRACE_SECONDS
(never a younger one: it may be an upload in flight), settles PendingFiles as old and marks
rows whose file is gone (see assets.media_audit). Exits with status 1 when orphan files or rows
without files remain, so a cron job or a monitor can alert on it.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from assets.imaging import human_bytes
from assets.media import grace_period
from assets.media_audit import MediaAudit, MediaFile, audit_media, fix_media


class Command(BaseCommand):
    help = "Report files under MEDIA_ROOT that no row names and rows whose file is missing; --fix repairs."

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true",
                            help="remove orphan and temporary files older than the grace period, mark rows without files")
        parser.add_argument("--list", type=int, default=50, metavar="N", help="paths listed per kind (default 50)")

    def handle(self, *args, fix: bool, list: int, **options):
        audit = audit_media()
        self._report(audit, list)
        if fix:
            done = fix_media(audit)
            self.stdout.write(
                f"Fixed: removed {done.orphans_removed} orphan files ({human_bytes(done.orphan_bytes_removed)}), "
                f"kept {done.orphans_kept} younger than the grace period or claimed meanwhile; removed "
                f"{done.temporary_removed} temporary files ({human_bytes(done.temporary_bytes_removed)}) and "
                f"{done.pending_files_removed} files left by interrupted uploads or deletes; marked "
                f"{done.assets_failed} photos failed; deleted {done.renditions_deleted} renditions (queued again); "
                f"cleared {done.fields_cleared} file fields."
            )
            for row in done.rows_left:
                self.stdout.write(f"  left as it is: {row.model} {row.pk} ({row.field}): {row.name}")
            audit = audit_media()
            self.stdout.write(f"After the fix: {len(audit.orphans)} orphan files, {len(audit.missing)} rows without files.")
        if not audit.clean:
            raise CommandError(f"{len(audit.orphans)} orphan files, {len(audit.missing)} rows whose file is missing")

    def _report(self, audit: MediaAudit, limit: int) -> None:
        grace = grace_period().total_seconds()
        now = time.time()
        write = self.stdout.write
        write(f"Media root {audit.root}: {audit.named_files} files ({human_bytes(audit.named_bytes)}) belong to rows.")
        self._files("Orphan files (no row names them)", audit.orphans, limit, now, grace)
        write(f"Rows whose file is missing: {len(audit.missing)}")
        for row in audit.missing[:limit]:
            write(f"  {row.model} {row.pk} ({row.field}): {row.name}")
        self._more(len(audit.missing), limit)
        self._files("Temporary files in incoming/", audit.temporary, limit, now, grace)
        write(f"Files being placed or removed (PendingFile): {audit.pending}")
        if audit.unmanaged:
            folders = ", ".join(f"{folder}/ ({count} files)" for folder, count in sorted(audit.unmanaged.items()))
            write(f"Not checked (no row ever names files there): {folders}")

    def _files(self, title: str, files: list[MediaFile], limit: int, now: float, grace: float) -> None:
        old = sum(now - f.modified >= grace for f in files)
        self.stdout.write(
            f"{title}: {len(files)} ({human_bytes(sum(f.size for f in files))}), {old} older than the grace period"
        )
        for f in files[:limit]:
            self.stdout.write(f"  {f.name}  {human_bytes(f.size)}  {_age(now - f.modified)} old")
        self._more(len(files), limit)

    def _more(self, count: int, limit: int) -> None:
        if count > limit:
            self.stdout.write(f"  ... and {count - limit} more (--list N shows more)")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"
