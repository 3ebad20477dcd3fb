"""Sending a stored file after the permission check has passed.

In development Django streams the file itself. In production the web server should: with
CLETIR_SENDFILE_HEADER set to `X-Accel-Redirect` (nginx) or `X-Sendfile` (Apache, Caddy
plugins), the response carries only that header, naming the file under
CLETIR_SENDFILE_PREFIX (nginx: an `internal` location aliased to MEDIA_ROOT), and the server
sends the bytes. Either way the media folder is never public: only a response from this code,
after the check, makes the server read a file.
"""
from __future__ import annotations

import mimetypes
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse


def serve_file(field_file, content_type: str | None = None, cache_seconds: int = 3600) -> HttpResponse:
    content_type = content_type or mimetypes.guess_type(field_file.name)[0] or "application/octet-stream"
    header = settings.CLETIR_SENDFILE_HEADER
    if header:
        response = HttpResponse(content_type=content_type)
        if header.lower() == "x-sendfile":
            response[header] = str(field_file.path)  # Apache's mod_xsendfile wants the path
        else:
            response[header] = settings.CLETIR_SENDFILE_PREFIX.rstrip("/") + "/" + quote(field_file.name)
    else:
        try:
            response = FileResponse(field_file.open("rb"), content_type=content_type)
        except FileNotFoundError:
            raise Http404("The file is missing from storage.") from None
    # Private photos: browsers may cache them, shared caches must not.
    response["Cache-Control"] = f"private, max-age={cache_seconds}"
    return response
