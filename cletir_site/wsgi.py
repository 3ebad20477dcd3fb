"""WSGI entry point (gunicorn in production)."""
import os

from django.core.wsgi import get_wsgi_application

from cletir_site.embedded_postgres import start_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
# Without DATABASE_URL the site runs on the embedded Postgres: up before the first request.
start_configured()
application = get_wsgi_application()
