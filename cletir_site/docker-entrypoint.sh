#!/bin/sh
# Entry point of the cletir image. The command is the process of one role:
#   web         gunicorn cletir_site.wsgi:application ...
#   workers     celery -A cletir_site worker -Q <queues> ...
#   beat        celery -A cletir_site beat ...
#   one-offs    python manage.py <command> (migrate, ensure_admin, fetch_models, ...)
# Long-running processes first check that the database (with pgvector) and the broker answer,
# so a worker on another machine with a wrong DATABASE_URL or broker URL stops with one clear
# line (and is restarted by its supervisor) instead of a traceback deep inside Celery.
set -eu

case "${1:-}" in
    gunicorn|celery)
        python manage.py check_services
        ;;
    "")
        echo "cletir: no command given (e.g. gunicorn ..., celery -A cletir_site worker ..., python manage.py ...)" >&2
        exit 2
        ;;
esac
exec "$@"
