"""Brute-force limit on logins (django-axes): the client address, the 429 answer, the token view.

django-axes counts failed logins per account and per client address (settings: AXES_*) and
refuses further attempts, even with the right password, until the failures are older than the
cool-off. This module gives it the three things cletir decides itself:

- which address a request comes from: REMOTE_ADDR, or behind CLETIR_TRUSTED_PROXIES reverse
  proxies the address the outermost of them saw (X-Forwarded-For is read only then: any client
  can write that header);
- the answer to a locked-out attempt: 429 with Retry-After (seconds until the lock ends), JSON on
  the API and a readable page on the login forms;
- the API's token view, which hands axes the request the middleware sees.
"""
from __future__ import annotations

import ipaddress
import math
from datetime import datetime

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken


def client_ip(request: HttpRequest) -> str | None:
    """The client's address. Each trusted proxy appends the address it received the request
    from to X-Forwarded-For, so with N of them the client is the N-th entry from the right;
    what lies further left was written by the client and is ignored."""
    remote = request.META.get("REMOTE_ADDR")
    proxies = settings.CLETIR_TRUSTED_PROXIES
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < proxies:
        return remote  # not through the configured proxies (a direct connection)
    try:
        return str(ipaddress.ip_address(hops[-proxies]))
    except ValueError:
        return remote


def seconds_until_unlocked(request: HttpRequest, credentials: dict | None) -> int:
    """When the lock on this account or address ends. Each lockout parameter (account,
    address) counts the failures of its attempts younger than the cool-off; it stays locked
    until enough of them have aged out to fall below the limit."""
    cool_off, limit = get_cool_off(request), get_failure_limit(request, credentials)
    now = timezone.now()
    unlocked_at: datetime = now
    for attempts in AxesProxyHandler.get_implementation().get_user_attempts(request, credentials):
        failures = 0
        for attempt_time, count in attempts.order_by("-attempt_time").values_list("attempt_time", "failures_since_start"):
            failures += count
            if failures >= limit:
                unlocked_at = max(unlocked_at, attempt_time + cool_off)
                break
    return max(1, math.ceil((unlocked_at - now).total_seconds()))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After, JSON for the API, a page for people."""
    retry_after = seconds_until_unlocked(request, credentials)
    minutes = math.ceil(retry_after / 60)
    message = (f"Too many failed logins for this account or from this address. "
               f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.")
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "registration/login_locked.html", {"message": message}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


class TokenRequestSerializer(AuthTokenSerializer):
    # Django's own limit on usernames: longer ones cannot exist, and are refused before they
    # reach authentication (axes stores the attempted username in a 255-character column).
    username = serializers.CharField(label="Username", write_only=True, max_length=150)


class ObtainTokenView(ObtainAuthToken):
    """POST /api/auth/token/: a user's API token for their username and password."""

    serializer_class = TokenRequestSerializer

    @extend_schema(request=TokenRequestSerializer, responses=inline_serializer("AuthToken", {"token": serializers.CharField()}),
                   description="Send it as `Authorization: Token <token>`. Failed logins are limited per account and "
                   "per client address: 429 with Retry-After (README, Security).")
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)

    def get_serializer_context(self):
        # authenticate() gets Django's request, not DRF's wrapper: axes marks a locked-out
        # attempt on the request it is given, and AxesMiddleware reads the mark on Django's
        # request (attributes set on the wrapper do not reach it).
        return {**super().get_serializer_context(), "request": self.request._request}
