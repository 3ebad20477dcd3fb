"""Log filters of the console handler (settings.LOGGING)."""
from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """A request answered 4xx is an expected event (a denied probe, a bad path): one line.

    Django logs the exception behind a 403 (PermissionDenied) or a 400 (SuspiciousOperation,
    BadRequest) with its traceback (`django.request`, `django.security.*`), so 200 denied probes
    wrote 200 tracebacks. The record keeps its message, level and status; only the traceback of
    an error that is the client's goes. 5xx records keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
