"""Settings for the test suite: the development settings, faster password hashing."""
import os

# Development mode (a generated secret key); Django's test runner forces DEBUG off anyway.
os.environ.setdefault("DJANGO_DEBUG", "1")

from cletir_site.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
