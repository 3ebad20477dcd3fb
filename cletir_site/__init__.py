"""cletir's Django project: settings, URLs, the Celery app and process wiring."""
from .celery import app as celery_app

__all__ = ("celery_app",)
