"""Checks the database, pgvector and the broker, with a plain message for each failure."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cletir_site.health import check_broker, check_database


class Command(BaseCommand):
    help = "Check that the database (with pgvector) and the Celery broker are reachable."

    def handle(self, *args, **options):
        db = settings.DATABASES["default"]
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db.get('NAME')}"
        source = "embedded Postgres" if settings.DATABASE_IS_EMBEDDED else "DATABASE_URL"
        problems = []
        report = check_database()
        if report["database"] != "ok":
            problems.append(f"database ({source}, {where}) is unreachable: {report['database_error']}")
        elif report["pgvector_available"] is None or "older" in report.get("pgvector_error", ""):
            # Missing from the server, or too old. (Available but not created yet is fine:
            # the first migration creates it.)
            problems.append(
                f"database ({source}, {where}): {report['pgvector_error']}; install pgvector >= 0.8 "
                "on that server (or unset DATABASE_URL to use the embedded Postgres)"
            )
        else:
            version = report["pgvector"] or f"{report['pgvector_available']} (available)"
            self.stdout.write(f"database: ok ({source}, {where}), pgvector {version}")
        broker = check_broker()
        from cletir_site.health import _redact

        url = _redact(settings.CELERY_BROKER_URL)
        if broker["broker"] != "ok":
            problems.append(f"broker {url} is unreachable: {broker['broker_error']}")
        else:
            self.stdout.write(f"broker: ok ({url})")
        if problems:
            raise CommandError("\n".join(problems))
