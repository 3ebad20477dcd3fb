"""Error answers: the API answers in JSON, in every mode, whatever failed.

DRF answers its own errors (validation, permissions, throttling) in JSON (or its browsable
page, when a browser asks for HTML). What it does not handle, an exception it re-raises or an
error outside a view (no route, the CSRF check, an exception in a middleware), Django answers
with an HTML page: its debug page when DEBUG is on
(190 KB for one API call), its error templates otherwise. ApiErrorsAsJson catches both for
paths under /api/: an unexpected exception becomes a logged 500 `{"detail": ...}`, and any
other error page is replaced by `{"detail": "Not found."}` (the status's reason) with the same
status.
"""
from __future__ import annotations

import logging

from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.signals import got_request_exception
from django.http import Http404, JsonResponse
from django.utils.log import log_response
from django.views import defaults
from rest_framework.response import Response

API_PREFIX = "/api/"
SERVER_ERROR_DETAIL = "The server failed to answer this request; it has been logged. Try again later."
security_logger = logging.getLogger("django.security")


def not_found(request, exception):
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


class ApiErrorsAsJson:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not isinstance(response, Response)  # DRF's own answers follow content negotiation
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            detail = SERVER_ERROR_DETAIL if response.status_code >= 500 else response.reason_phrase.capitalize() + "."
            return JsonResponse({"detail": detail}, status=response.status_code, headers=_kept_headers(response))
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        status, detail = _status_of(exception)
        response = JsonResponse({"detail": detail}, status=status)
        if status >= 500:
            # What Django does for the page it no longer renders: error reporters listen to the
            # signal, and the traceback is logged.
            got_request_exception.send(sender=None, request=request)
            log_response("%s: %s", "Internal Server Error", request.path, response=response, request=request,
                         exception=exception)
        elif isinstance(exception, SuspiciousOperation):
            security_logger.warning("%s: %s", type(exception).__name__, exception)
        return response


def _status_of(exception: Exception) -> tuple[int, str]:
    if isinstance(exception, Http404):
        return 404, "Not found."
    if isinstance(exception, PermissionDenied):
        return 403, "You do not have permission to perform this action."
    if isinstance(exception, RequestDataTooBig):
        return 413, "The request body is larger than this server accepts."
    if isinstance(exception, (SuspiciousOperation, BadRequest)):
        return 400, "Bad request."
    return 500, SERVER_ERROR_DETAIL


def _kept_headers(response) -> dict[str, str]:
    # An error page may carry headers the client needs (Allow on a 405, Retry-After on a 429/503).
    return {name: response[name] for name in ("Allow", "Retry-After", "WWW-Authenticate") if response.has_header(name)}
