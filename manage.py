#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cletir_site.settings")
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

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
