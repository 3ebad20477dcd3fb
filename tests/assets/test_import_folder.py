"""`manage.py import_folder`: recursive, resumable, reports bad files and goes on."""
from __future__ import annotations

import io
import os
import re

import pytest
from django.core.management import CommandError, call_command

from assets.models import Asset, Library, RejectedFile

from .conftest import image_bytes

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_folder", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "2019" / "summer").mkdir(parents=True)
    (root / ".cache").mkdir()
    (root / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (root / "2019" / "b.png").write_bytes(image_bytes("PNG", seed=2))
    (root / "2019" / "summer" / "c.webp").write_bytes(image_bytes("WEBP", seed=3))
    (root / "2019" / "summer" / "copy of a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (root / "2019" / "notes.txt").write_text("not a photo")
    (root / ".cache" / "d.jpg").write_bytes(image_bytes("JPEG", seed=4))
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_import_is_recursive_and_reports_bad_files(tree, make_user):
    admin = make_user("root", is_superuser=True, is_staff=True)

    output = run(str(tree), "--library", "Archive")

    library = Library.objects.get(name="Archive")
    assert library.owner == admin
    assert sorted(Asset.objects.filter(library=library).values_list("original_name", flat=True)) == [
        "2019/b.png", "2019/summer/c.webp", "a.jpg",
    ]
    assert list(RejectedFile.objects.values_list("original_name", "reason")) == [("2019/notes.txt", "not_an_image")]
    assert "rejected  2019/notes.txt: not_an_image: This file is not an image." in output
    assert "  stored: 3\n  duplicates: 1\n  rejected: 1\n    not_an_image: 1\n  already imported (skipped): 0" in output


def test_second_run_adds_only_what_is_new(tree, make_user):
    owner = make_user("ann")
    run(str(tree), "--library", "Archive", "--owner", "ann")

    output = run(str(tree), "--library", "Archive", "--owner", "ann")
    assert "  stored: 0\n  duplicates: 0\n  rejected: 0\n  already imported (skipped): 5" in output
    assert RejectedFile.objects.count() == 1  # the bad file is not reported twice

    (tree / "2019" / "summer" / "e.gif").write_bytes(image_bytes("GIF", seed=5))
    # Touched but unchanged content: read again, recognised by its hash.
    stat = os.stat(tree / "a.jpg")
    os.utime(tree / "a.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    output = run(str(tree), "--library", "Archive", "--owner", "ann")
    assert "  stored: 1\n  duplicates: 1\n  rejected: 0\n  already imported (skipped): 4" in output
    assert Asset.objects.filter(library__owner=owner).count() == 4


def test_zip_in_the_folder_is_expanded(tmp_path, make_user):
    import zipfile

    make_user("ann")
    root = tmp_path / "in"
    root.mkdir()
    with zipfile.ZipFile(root / "old.zip", "w") as zf:
        zf.writestr("x/1.jpg", image_bytes("JPEG", seed=6))
        zf.writestr("../2.jpg", image_bytes("JPEG", seed=7))
        zf.writestr("__MACOSX/x/._1.jpg", b"\x00\x05\x16\x07")
    output = run(str(root), "--library", "Z", "--owner", "ann")
    assert list(Asset.objects.values_list("original_name", flat=True)) == ["x/1.jpg"]
    # A refusal from inside an archive names the archive.
    assert ("rejected  old.zip: ../2.jpg: unsafe_path: The entry's path is absolute or leaves the archive's "
            "folder; it was not extracted.") in output
    assert "  stored: 1\n  duplicates: 0\n  rejected: 1\n    unsafe_path: 1\n  skipped in archives (not photos): 1" in output


def test_missing_path_is_an_error(tmp_path, make_user):
    make_user("ann")
    with pytest.raises(CommandError, match="no such file or folder"):
        run(str(tmp_path / "nowhere"), "--library", "X", "--owner", "ann")


def test_unknown_owner_is_an_error(tree):
    with pytest.raises(CommandError, match="no such user"):
        run(str(tree), "--library", "X", "--owner", "nobody")


def test_import_stops_with_the_reason_when_the_database_fails(tree, make_user, monkeypatch,
                                                               database_fails_after_one_photo):
    make_user("ann")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="import stopped: The server failed while storing this file"):
        call_command("import_folder", str(tree), "--library", "Archive", "--owner", "ann", stdout=out, stderr=err)
    assert Asset.objects.count() == 1
    assert "failed  2019/b.png: server_error: The server failed while storing this file" in err.getvalue()
    assert "  stored: 1\n" in out.getvalue()
    # Nothing about the failed file is remembered: the next run reads it again.
    monkeypatch.undo()
    assert "  stored: 2\n" in run(str(tree), "--library", "Archive", "--owner", "ann")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, as a shell's is."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_progress_bar_counts_the_files_with_rate_and_eta(tree, make_user):
    make_user("ann")
    out, err = io.StringIO(), Terminal()
    call_command("import_folder", str(tree), "--library", "Archive", "--owner", "ann", stdout=out, stderr=err)

    # tqdm redraws the line with carriage returns; its last drawing is the finished bar.
    final = err.getvalue().split("\r")[-1]
    assert re.search(r"^Importing: 100%\|.*\| 5/5 \[\d\d:\d\d<00:00, +[\d.]+ files/s, 3 stored, 1 duplicates, "
                     r"1 rejected, 0 already imported\]", final), final
    # Listed first (the bar needs the tree's length), and the same outcome table at the end.
    assert err.getvalue().startswith("\rListing: 0 files")
    assert "rejected  2019/notes.txt: not_an_image" in out.getvalue()
    assert out.getvalue().endswith("  stored: 3\n  duplicates: 1\n  rejected: 1\n    not_an_image: 1\n"
                                   "  already imported (skipped): 0\n")


@pytest.mark.parametrize("stderr, flags", [(Terminal, ["--no-progress"]), (io.StringIO, [])])
def test_no_bar_with_no_progress_or_without_a_terminal(tree, make_user, stderr, flags):
    make_user("ann")
    out, err = io.StringIO(), stderr()
    call_command("import_folder", str(tree), "--library", "Archive", "--owner", "ann", *flags, stdout=out, stderr=err)
    assert err.getvalue() == ""
    assert "  stored: 3\n  duplicates: 1\n" in out.getvalue()
