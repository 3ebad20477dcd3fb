#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys

# Commands that leave the embedded Postgres as it is: `embedded_postgres status` reports on it
# and `embedded_postgres stop` stops it; help needs no database.
LEAVES_EMBEDDED_DATABASE_ALONE = {"embedded_postgres", "help", "version"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

    from cletir_site.embedded_postgres import start_configured

    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command not in LEAVES_EMBEDDED_DATABASE_ALONE and not command.startswith("-"):
        # Every management command enters here, before Django dispatches it: one place starts
        # the embedded server (when DATABASE_URL is unset) for migrate, check_services,
        # runserver, shell and the import commands alike, however they connect.
        start_configured()
    try:
        execute_from_command_line(sys.argv)
    except OperationalError as exc:
        # An unreachable DATABASE_URL is a configuration problem, not a bug: say so plainly.
        from django.conf import settings

        db = settings.DATABASES["default"]
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db.get('NAME')}"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sys.stderr.write(f"cletir: cannot use the database at {where}: {first_line}\n")
        sys.stderr.write("Check DATABASE_URL (or unset it to use the embedded Postgres).\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
