"""Sending a stored file: who may ask for it, and sending it after the permission check.

File URLs (originals, renditions, proxy and example images) appear in pages and in API
payloads alike, so they accept what both accept: the browser's session and the API's
`Authorization: Token ...` (`login_or_token_required`).

In development Django streams the file itself. In production the web server should: with
CLETIR_SENDFILE_HEADER set to `X-Accel-Redirect` (nginx) or `X-Sendfile` (Apache, Caddy
plugins), the response carries only that header, naming the file under
CLETIR_SENDFILE_PREFIX (nginx: an `internal` location aliased to MEDIA_ROOT), and the server
sends the bytes. Either way the media folder is never public: only a response from this code,
after the check, makes the server read a file.
"""
from __future__ import annotations

import mimetypes
from functools import wraps
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from rest_framework.exceptions import APIException, NotAuthenticated
from rest_framework.request import Request
from rest_framework.settings import api_settings


def login_or_token_required(view):
    """The file view runs for a user authenticated the way the API authenticates (its
    DEFAULT_AUTHENTICATION_CLASSES: session or token); its own check then decides what they
    may see (404 for a photo of a library they cannot see).

    Without valid credentials, a browser opening the URL as a page (it accepts text/html) is
    sent to the login page as before; any other client (a program, an <img> request) gets the
    API's JSON answer, 401 with `WWW-Authenticate: Token`, because a redirect to an HTML form is
    no answer a program can act on, and a wrong token must say so.
    """

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        api_request = Request(request, authenticators=[auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES])
        try:
            user = api_request.user  # runs the authenticators; a bad token raises
        except APIException as exc:
            return _not_authenticated(api_request, exc)
        if not user.is_authenticated:
            if "text/html" in request.headers.get("Accept", ""):
                return redirect_to_login(request.get_full_path())
            return _not_authenticated(api_request, NotAuthenticated())
        request.user = user
        response = view(request, *args, **kwargs)
        # The same URL answers differently per credentials: caches must keep them apart.
        patch_vary_headers(response, ["Authorization"])
        return response

    return wrapped


def _not_authenticated(api_request: Request, exc: APIException) -> JsonResponse:
    """The body, status and header DRF gives an unauthenticated API request."""
    challenge = api_request.authenticators[0].authenticate_header(api_request) if api_request.authenticators else None
    response = JsonResponse({"detail": str(exc.detail)}, status=401 if challenge else 403)
    if challenge:
        response["WWW-Authenticate"] = challenge
    return response


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
