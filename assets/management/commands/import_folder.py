"""`manage.py import_folder PATH --library NAME [--owner USERNAME] [--no-progress]`: a folder
tree on the server.

Recursive and resumable: every file seen is remembered with its size and modification time
(ImportedFile), so a second run reads only files that are new or changed since; a changed file
whose bytes are already in the library is reported as a duplicate by ingestion. Bad files are
reported and the import goes on; the exit status is 0 unless PATH does not exist (or the
library's owner cannot be determined).

On a terminal, a progress bar on stderr counts the files (rate, ETA, the outcomes so far): the
tree is listed first so the bar knows its length. Without a terminal (a log file, cron) or with
--no-progress, a line of counts every PROGRESS_EVERY_SECONDS takes its place. Either way the
run ends with the table of outcomes on stdout.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from assets.archives import is_skipped_name
from assets.ingest import DUPLICATE, FAILED, REJECTED, SKIPPED, STORED, IngestOutcome, Ingestion
from assets.models import ImportedFile, Library
from assets.progress_bar import above, add_progress_argument, progress_bar

PROGRESS_EVERY_SECONDS = 5.0


class Command(BaseCommand):
    help = "Import a folder tree of photos into a library (recursive; a second run adds only what is new)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder (searched recursively) or a single file or .zip")
        parser.add_argument("--library", required=True, help="library name; created if missing")
        parser.add_argument("--owner", help="username owning the library (default: the first superuser)")
        add_progress_argument(parser)

    def handle(self, *args, path: str, library: str, owner: str | None, verbosity: int, no_progress: bool = False,
               **options):
        root = Path(path).expanduser().absolute()
        if not root.exists():
            raise CommandError(f"{path}: no such file or folder")
        target = self._library(library, owner)
        # One query for what earlier runs saw: the skip test is then a dict lookup per file.
        seen = {
            p: (size, mtime)
            for p, size, mtime in ImportedFile.objects.filter(library=target).values_list("path", "size_bytes", "mtime_ns")
        }
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        self.stdout.write(f"Importing {root} into library \"{target.name}\" (id {target.pk}) of {target.owner}")
        files: Iterable[Path] = _files_under(root)
        bar = progress_bar(self.stderr, None, "files", wanted=not no_progress, desc="Listing")
        if not bar.disable:  # the bar's ETA needs the length of the tree: list it first
            files = _listed(files, bar)
            bar.reset(total=len(files))
            bar.set_description("Importing")
        started = last_report = time.monotonic()
        ingestion = Ingestion(target)
        with bar:
            for file_path in files:
                self._import_one(root, file_path, ingestion, target, seen, counts, reasons, bar, verbosity)
                bar.update()
                bar.set_postfix_str(_tally(counts), refresh=False)
                if ingestion.stopped is not None:  # the database or the library is gone: the rest would fail too
                    break
                now = time.monotonic()
                if bar.disable and now - last_report >= PROGRESS_EVERY_SECONDS:
                    last_report = now
                    self.stdout.write(f"... {_tally(counts)} ({now - started:.0f} s)")
        self.stdout.write(self._summary(target, counts, reasons, time.monotonic() - started))
        if ingestion.stopped is not None:
            raise CommandError(f"import stopped: {ingestion.stopped.message} A second run goes on from here.")

    def _import_one(self, root: Path, file_path: Path, ingestion: Ingestion, target: Library, seen: dict,
                    counts: Counter, reasons: Counter, bar, verbosity: int) -> None:
        try:
            stat = file_path.stat()
        except OSError as exc:
            counts["unreadable"] += 1
            with above(bar):
                self.stderr.write(f"unreadable  {file_path}: {exc.strerror or exc}")
            return
        key = str(file_path)
        if seen.get(key) == (stat.st_size, stat.st_mtime_ns):
            counts["already"] += 1
            return
        label = file_path.name if file_path == root else str(file_path.relative_to(root))
        try:
            with open(file_path, "rb") as fh:
                outcomes = ingestion.upload(fh, label)
        except OSError as exc:  # vanished or unreadable between walk and open; not remembered
            counts["unreadable"] += 1
            with above(bar):
                self.stderr.write(f"unreadable  {label}: {exc.strerror or exc}")
            return
        with above(bar):
            for outcome in outcomes:
                counts[outcome.status] += 1
                if outcome.status == REJECTED:
                    reasons[outcome.reason] += 1
                    self.stdout.write(f"rejected  {outcome.label}: {outcome.reason}: {outcome.message}")
                elif outcome.status == FAILED:
                    self.stderr.write(f"failed  {outcome.label}: {outcome.reason}: {outcome.message}")
                elif verbosity >= 2:
                    self.stdout.write(f"{outcome.status}  {outcome.label}")
        if ingestion.stopped is None:
            _remember(target, key, stat, outcomes)

    def _library(self, name: str, owner: str | None) -> Library:
        User = get_user_model()
        if owner:
            user = User.objects.filter(username=owner).first()
            if user is None:
                raise CommandError(f"--owner {owner}: no such user")
            return Library.objects.get_or_create(owner=user, name=name)[0]
        existing = list(Library.objects.filter(name=name).select_related("owner")[:2])
        if len(existing) == 1:
            return existing[0]
        if len(existing) > 1:
            raise CommandError(f"several libraries are named \"{name}\"; choose one with --owner")
        user = User.objects.filter(is_superuser=True).order_by("id").first()
        if user is None:
            raise CommandError("no superuser to own the new library; pass --owner USERNAME")
        return Library.objects.get_or_create(owner=user, name=name)[0]

    def _summary(self, target: Library, counts: Counter, reasons: Counter, seconds: float) -> str:
        lines = [
            f"Done in {seconds:.1f} s: library \"{target.name}\" (id {target.pk})",
            f"  stored: {counts[STORED]}",
            f"  duplicates: {counts[DUPLICATE]}",
            f"  rejected: {counts[REJECTED]}",
        ]
        lines += [f"    {reason}: {n}" for reason, n in sorted(reasons.items())]
        if counts[SKIPPED]:
            lines.append(f"  skipped in archives (not photos): {counts[SKIPPED]}")
        lines.append(f"  already imported (skipped): {counts['already']}")
        if counts["unreadable"]:
            lines.append(f"  unreadable (will be tried again): {counts['unreadable']}")
        return "\n".join(lines)


def _tally(counts: Counter) -> str:
    return (
        f"{counts[STORED]} stored, {counts[DUPLICATE]} duplicates, {counts[REJECTED]} rejected, "
        f"{counts['already']} already imported"
    )


def _files_under(root: Path) -> Iterator[Path]:
    """Files in a stable order; hidden and desktop-metadata files and folders are left out, and
    so is MEDIA_ROOT (importing the folder that holds it must not import our own copies)."""
    if root.is_file():
        yield root
        return
    media_root = Path(settings.MEDIA_ROOT).resolve()
    # Symlinked folders are not followed: a link to a parent would loop forever.
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not is_skipped_name(d) and (Path(folder) / d).resolve() != media_root
        )
        for filename in sorted(filenames):
            if not is_skipped_name(filename):
                yield Path(folder) / filename


def _listed(files: Iterable[Path], bar) -> list[Path]:
    listed = []
    for path in files:
        listed.append(path)
        bar.update()
    return listed


PATH_MAX = ImportedFile._meta.get_field("path").max_length


def _remember(library: Library, key: str, stat: os.stat_result, outcomes: list[IngestOutcome]) -> None:
    if len(key) > PATH_MAX:  # not remembered: read again next time, deduplicated by its hash
        return
    statuses = {outcome.status for outcome in outcomes}
    # A zip gives several outcomes: it counts as stored if anything in it was.
    overall = next((s for s in (STORED, DUPLICATE, REJECTED) if s in statuses), REJECTED)
    asset_id = next((o.asset_id for o in outcomes if o.asset_id is not None), None)
    ImportedFile.objects.update_or_create(
        library=library, path=key,
        defaults={"size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "outcome": overall, "asset_id": asset_id},
    )
