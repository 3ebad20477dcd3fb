"""Which files of a multipart request arrived whole.

Django drops a file whose part the request body cut off (the client went away, a proxy gave
up): it calls `upload_interrupted` on the upload handlers and the file is simply not in
request.FILES. ArrivalTracker, the first of FILE_UPLOAD_HANDLERS, remembers its name so the
upload can answer `not_received` for it instead of saying nothing. It passes every byte on to
the handlers after it, which store the files (in memory, or spooled to FILE_UPLOAD_TEMP_DIR).
"""
from __future__ import annotations

import os

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler


class ArrivalTracker(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.cut_off: list[str] = []  # names of files the request ended in the middle of
        self._current: str | None = None

    def new_file(self, field_name, file_name, *args, **kwargs) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        self._current = file_name
        # The spool folder lives in MEDIA_ROOT, which a fresh site (or a test) may not have yet.
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, exist_ok=True)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data

    def file_complete(self, file_size: int) -> None:
        self._current = None  # the next handler returns the file itself

    def upload_interrupted(self) -> None:
        if self._current is not None:
            self.cut_off.append(self._current)
            self._current = None


def files_cut_off(request) -> list[str]:
    """Names of the files of `request` (Django's or DRF's) whose data did not all arrive."""
    for handler in request.upload_handlers:
        if isinstance(handler, ArrivalTracker):
            return list(handler.cut_off)
    return []
