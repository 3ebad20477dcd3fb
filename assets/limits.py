"""Upload quota: how many files one user may add per hour (each archive entry counts)."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Asset, RejectedFile

WINDOW = timedelta(hours=1)


class UploadQuotaExceeded(Exception):
    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = retry_after_seconds


def check_upload_quota(user, incoming: int) -> None:
    """Raise UploadQuotaExceeded when `incoming` more files would pass the user's hourly quota
    (CLETIR_UPLOAD_FILES_PER_HOUR; 0: no limit). Stored and refused files both count: a
    refused file was read and checked too."""
    limit = settings.CLETIR_UPLOAD_FILES_PER_HOUR
    if limit <= 0:
        return
    since = timezone.now() - WINDOW
    used = (Asset.objects.filter(uploaded_by=user, created_at__gte=since).count()
            + RejectedFile.objects.filter(uploaded_by=user, created_at__gte=since).count())
    if used + incoming > limit:
        raise UploadQuotaExceeded(
            f"Upload limit reached: {used} files in the last hour, at most {limit} per hour on this site. "
            "Try again later, or ask an administrator to import large collections with manage.py import_folder.",
            int(WINDOW.total_seconds()),
        )
