"""Report on or stop the embedded Postgres (used when DATABASE_URL is unset).

Neither action starts the server: manage.py leaves it alone for this command (see manage.py).
"""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cletir_site import embedded_postgres


class Command(BaseCommand):
    help = "Report on (status) or stop the embedded Postgres 18 + pgvector server of this checkout."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, action, **options):
        if not settings.DATABASE_IS_EMBEDDED:
            raise CommandError("DATABASE_URL is set: this site does not use the embedded Postgres.")
        pgdata = settings.EMBEDDED_PGDATA
        if action == "status":
            state = embedded_postgres.status(pgdata)
            if state.running:
                socket = embedded_postgres.socket_dir(pgdata)
                self.stdout.write(f"embedded Postgres running in {pgdata} (pid {state.pid}, socket {socket})")
            elif state.initialised:
                self.stdout.write(f"embedded Postgres not running (data in {pgdata}); any manage.py command, "
                                  "worker or `make demo` starts it")
            else:
                self.stdout.write(f"embedded Postgres not created yet ({pgdata} will hold it)")
        elif embedded_postgres.stop(pgdata):
            self.stdout.write(f"stopped the embedded Postgres in {pgdata}")
        else:
            self.stdout.write(f"the embedded Postgres in {pgdata} was not running")
