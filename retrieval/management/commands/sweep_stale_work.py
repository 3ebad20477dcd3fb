"""Sweep stale work once (what the periodic beat task does every minute), and say what was done."""
from django.core.management.base import BaseCommand

from retrieval.sweeper import sweep_stale_work


class Command(BaseCommand):
    help = (
        "Fail or re-queue searches that outlived CLETIR_SEARCH_STALE_SECONDS, and queue indexing and "
        "thumbnails again where they stalled for CLETIR_PHOTO_WORK_STALE_SECONDS, and album re-derivations that "
        "stalled or failed. Safe to run any time."
    )

    def handle(self, *args, **options):
        report = sweep_stale_work()
        self.stdout.write(" ".join(f"{name}={count}" for name, count in report.as_dict().items()))
