"""/healthz: is every part the product needs up? JSON, 200 when all are, 503 otherwise."""
from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

MIN_PGVECTOR = (0, 8)


def check_database() -> dict:
    """Database reachability and pgvector: the installed version (None before the first
    migration) and the version the server could install (None: the server has no pgvector)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT installed_version, default_version FROM pg_available_extensions WHERE name = 'vector'"
            )
            row = cursor.fetchone()
    except DatabaseError as exc:
        return {"database": "down", "database_error": _first_line(exc), "pgvector": None}
    installed, available = row if row else (None, None)
    result = {"database": "ok", "pgvector": installed, "pgvector_available": available}
    if available is None:
        result["pgvector_error"] = "the server has no pgvector extension"
    elif _version_tuple(installed or available) < MIN_PGVECTOR:
        result["pgvector_error"] = f"pgvector {installed or available} is older than the required 0.8"
    elif installed is None:
        result["pgvector_error"] = "extension 'vector' is not installed yet (run manage.py migrate)"
    return result


def check_broker(timeout: float = 2.0) -> dict:
    from cletir_site.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises transport-specific errors
        return {"broker": "down", "broker_error": _first_line(exc)}
    return {"broker": "ok"}


def check_workers() -> dict:
    from retrieval.workers import workers_seen

    try:
        return {"workers": workers_seen()}
    except DatabaseError:
        return {"workers": []}


@never_cache
@require_GET
def healthz(request):
    report = {**check_database(), **check_broker(), **check_workers()}
    report["broker_url"] = _redact(settings.CELERY_BROKER_URL)
    healthy = (
        report["database"] == "ok"
        and report["pgvector"] is not None
        and "pgvector_error" not in report
        and report["broker"] == "ok"
        and len(report["workers"]) > 0
    )
    report["status"] = "ok" if healthy else "down"
    return JsonResponse(report, status=200 if healthy else 503)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _redact(url: str) -> str:
    """The broker URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)
