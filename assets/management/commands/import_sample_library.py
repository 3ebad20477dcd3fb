"""`manage.py import_sample_library`: a demo library of real photographs shipped by scikit-image.

scikit-image's wheel carries a couple of dozen public-domain / freely licensed photographs
(`skimage/data/`, see its README.txt); they make a small real library for the demo without any
download. Running it again adds nothing (photos are deduplicated by content).
"""
from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from assets.ingest import STORED, ingest_file
from assets.models import Library

# Photographs only (no synthetic test patterns, masks or arrays); a small animated GIF among
# them shows that format too (only its first frame is used).
SAMPLE_FILES = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png", "no_time_for_that_tiny.gif",
]
LIBRARY_NAME = "Sample photos"


def sample_folder() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


class Command(BaseCommand):
    help = "Create (or complete) the demo library from the photographs bundled with scikit-image."

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="username owning the library (default: the first superuser)")

    def handle(self, *args, owner=None, **options):
        User = get_user_model()
        user = User.objects.filter(username=owner).first() if owner else User.objects.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("No owner: pass --owner USERNAME or create a superuser first.")
        library, _ = Library.objects.get_or_create(owner=user, name=LIBRARY_NAME)
        folder = sample_folder()
        stored = 0
        for name in SAMPLE_FILES:
            path = folder / name
            if not path.exists():
                self.stderr.write(f"skipped {name}: not in this scikit-image release")
                continue
            with path.open("rb") as handle:
                outcome = ingest_file(library, handle, name, uploaded_by=user)
            stored += outcome.status == STORED
            if outcome.status == "rejected":
                self.stderr.write(f"{name}: {outcome.message}")
        self.stdout.write(f"sample library “{library.name}” (owner {user.username}): {stored} photos added, "
                          f"{library.assets.count()} in all")
