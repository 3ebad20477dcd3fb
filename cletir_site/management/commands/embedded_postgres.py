"""Start, stop or locate the embedded Postgres (used when DATABASE_URL is unset)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cletir_site import embedded_postgres


class Command(BaseCommand):
    help = "Manage the embedded Postgres 18 + pgvector server of this checkout."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, action, **options):
        if not settings.DATABASE_IS_EMBEDDED:
            raise CommandError("DATABASE_URL is set: this site does not use the embedded Postgres.")
        pgdata = settings.EMBEDDED_PGDATA
        if action == "status":
            db = settings.DATABASES["default"]
            self.stdout.write(f"embedded Postgres running in {pgdata} (socket {db['HOST']})")
        elif embedded_postgres.stop(pgdata):
            self.stdout.write(f"stopped the embedded Postgres in {pgdata}")
        else:
            self.stdout.write(f"the embedded Postgres in {pgdata} was not running")
