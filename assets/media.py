"""Writing files under MEDIA_ROOT: atomically, and never anywhere else.

Files are first written to `MEDIA_ROOT/incoming/` (same filesystem) and then renamed into their
content-addressed place with os.replace, so a reader never sees half a file and a crash leaves
at worst a temporary file in `incoming/`, never a truncated photo under its final name. Final
names are made by the models' upload_to functions from ids and hashes, and resolved with the
storage's safe_join, so no user-supplied name reaches the filesystem.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.files.storage import default_storage

INCOMING_DIR = "incoming"


def incoming_dir() -> Path:
    path = Path(default_storage.path(INCOMING_DIR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_incoming_file(suffix: str = "") -> tuple[int, Path]:
    """An empty temporary file in MEDIA_ROOT/incoming: (open fd, path). The caller removes it."""
    fd, name = tempfile.mkstemp(prefix="part-", suffix=suffix, dir=incoming_dir())
    return fd, Path(name)


def move_into_media(temp_path: Path, name: str) -> None:
    """Rename a finished temporary file to its storage `name` (relative to MEDIA_ROOT)."""
    # default_storage.path() raises SuspiciousFileOperation for a name that escapes MEDIA_ROOT.
    final = Path(default_storage.path(name))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(temp_path, 0o644)  # mkstemp makes 0600; the web server may run as another user
    os.replace(temp_path, final)


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
