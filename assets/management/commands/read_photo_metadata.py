"""`manage.py read_photo_metadata [--library ID] [--batch N] [--no-progress]`: the backfill of
embedded metadata (assets.metadata) for photos stored before ingestion read it, or read by an
older version of the reader (Asset.metadata_version below METADATA_VERSION).

A command rather than a data migration: reading every stored file of a large archive takes
minutes to hours, which a migration would spend inside one transaction with the deploy waiting
on it; this runs while the site serves, in batches that commit one by one, and can be stopped
and run again. Idempotent: a photo read by the current reader is never selected again, so a
second run reads only what an interrupted one left, and a run with nothing left does nothing.
A photo whose file cannot be opened is counted as read, with the reason in `metadata_error`
(`manage.py check_media` reports missing files).
"""
from __future__ import annotations

from django.core.management.base import BaseCommand

from assets.imaging import read_file_metadata
from assets.metadata import METADATA_FIELDS, METADATA_VERSION
from assets.models import Asset
from assets.progress_bar import add_progress_argument, progress_bar


class Command(BaseCommand):
    help = "Read the embedded XMP, IPTC and EXIF metadata of photos stored before it was read at upload."

    def add_arguments(self, parser):
        parser.add_argument("--library", type=int, help="only the photos of this library (id)")
        parser.add_argument("--batch", type=int, default=200, help="photos read and saved per transaction")
        add_progress_argument(parser)

    def handle(self, *args, library: int | None, batch: int, no_progress: bool, **options):
        unread = Asset.objects.filter(metadata_version__lt=METADATA_VERSION)
        if library is not None:
            unread = unread.filter(library_id=library)
        bar = progress_bar(self.stderr, unread.count(), "photos", wanted=not no_progress, desc="Reading metadata")
        read = unreadable = 0
        after = 0
        with bar:
            while True:
                # Keyset pages in id order: each row is visited once per run, whatever the others do.
                photos = list(unread.filter(pk__gt=after).order_by("pk").only("pk", "file")[:batch])
                if not photos:
                    break
                for photo in photos:
                    metadata = read_file_metadata(photo.file.path)
                    unreadable += bool(metadata.errors)
                    for name, value in metadata.asset_fields().items():
                        setattr(photo, name, value)
                Asset.objects.bulk_update(photos, METADATA_FIELDS)
                read += len(photos)
                after = photos[-1].pk
                bar.update(len(photos))
        self.stdout.write(f"Read the embedded metadata of {read} photos; {unreadable} with a block or file that "
                          "could not be read (see metadata_error).")
