"""Settings for the test suite: the development settings, faster password hashing."""
import os

# Development mode (a generated secret key); Django's test runner forces DEBUG off anyway.
os.environ.setdefault("DJANGO_DEBUG", "1")

from cletir_site.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# One test database per test run: two runs at once (a developer's and CI's, or two checkouts
# on one embedded server) must not drop each other's database.
DATABASES["default"]["TEST"] = {"NAME": f"test_cletir_{os.getpid()}"}  # noqa: F405
