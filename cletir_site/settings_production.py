"""Production settings: the env-driven base settings, hardened for a site on the internet.

Select with DJANGO_SETTINGS_MODULE=cletir_site.settings_production (the Docker image does).
Every variable is documented in .env.example; with that environment `manage.py check --deploy`
reports no issue (tests/test_deployment.py runs it).
"""
from __future__ import annotations

import os

# Checked before the base settings load: with DJANGO_DEBUG=1 in the environment they would
# quietly generate a development key, which must never happen on a real site.
if not os.environ.get("DJANGO_SECRET_KEY", "").strip():
    raise SystemExit(
        "cletir: DJANGO_SECRET_KEY is not set. The production settings need it: a long random "
        "string (e.g. `python -c \"import secrets; print(secrets.token_urlsafe(50))\"`), kept out "
        "of version control."
    )
# A real site names its hosts, its database server and its broker: the development fallbacks
# (localhost names, an embedded Postgres and a file broker inside the checkout) are wrong there.
_REQUIRED = {
    "DJANGO_ALLOWED_HOSTS": "the site's host names, comma-separated (e.g. photos.example.org)",
    "DATABASE_URL": "the Postgres server with pgvector (e.g. postgres://cletir:PASSWORD@postgres:5432/cletir)",
    "CELERY_BROKER_URL": "the Redis broker (e.g. redis://:PASSWORD@redis:6379/0)",
}
for _name, _example in _REQUIRED.items():
    if not os.environ.get(_name, "").strip():
        raise SystemExit(f"cletir: {_name} is not set. The production settings need {_example}.")

from cletir_site.settings import *  # noqa: E402,F401,F403
from cletir_site.settings import env  # noqa: E402

DEBUG = False

# The containers' own health checks call http://localhost:8000/healthz (see docker-compose.yml).
ALLOWED_HOSTS = [*env.list("DJANGO_ALLOWED_HOSTS"), "localhost"]
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS -----------------------------------------------------------------------------------
# Behind a TLS-terminating proxy (nginx, Caddy, Traefik) Django sees plain HTTP; the proxy's
# X-Forwarded-Proto tells it the client used HTTPS. Only enable this when the proxy sets (and
# overwrites) that header, otherwise any client could claim HTTPS.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Health probes come over plain HTTP from inside the container network, not from a browser.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# The preload token has no effect until the domain's owner submits the apex domain to the
# browsers' preload list; a site that must never be listed sets 0 (and check --deploy says so).
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Static files ----------------------------------------------------------------------------
# WhiteNoise (in the base settings' MIDDLEWARE) serves the collected static files (admin, API
# docs) from gunicorn with far-future caching of hashed names, so the site needs no separate
# static file server. Photos are never static: they go through cletir's authorised views.
WHITENOISE_USE_FINDERS = False
WHITENOISE_AUTOREFRESH = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Persistent connections: gunicorn and Celery processes are long-lived; health checks on
# reuse (CONN_HEALTH_CHECKS in the base settings) drop connections a restart of Postgres broke.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)  # noqa: F405
