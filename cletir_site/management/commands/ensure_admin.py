"""Creates the first admin user on a fresh site and prints its credentials once."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser if the site has none, and print its credentials (once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin: a superuser exists already (reset with `manage.py changepassword`).")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        bar = "=" * 60
        self.stdout.write(
            f"{bar}\nCreated the admin user. It is shown only this once:\n"
            f"  username: {username}\n  password: {password}\n{bar}"
        )
