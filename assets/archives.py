"""Reading a zip archive of photos safely: entries are streams, never extracted by name.

Nothing here writes to disk. Each entry is read as a stream and handed to ingestion, which
stores it under a content-addressed name; the entry's own name is only a label
(`original_name`). Even so, names that would escape a folder if someone did extract the
archive (absolute paths, drive letters, backslashes, `..`) are refused as `unsafe_path`, so the
upload report tells the user the archive is suspicious.

Zip bombs are bounded three ways before any byte is decompressed: the number of entries and the
total declared uncompressed size of the archive (the whole archive is refused: `zip_bomb` when
it is also compressed like one, else `archive_too_large`), and each entry's compression ratio
(`zip_bomb`, that entry is refused). The ratio is judged before the entry's size, so a bomb is
called a bomb even when it would also be over the upload limit. Declared sizes can be trusted
as a bound: Python's zipfile never returns more than an entry's declared size and fails the CRC
check when the data does not match it. Desktop metadata (`__MACOSX/`, `.DS_Store`, ...) is
listed as skipped, so the user sees it was looked at; folders are left out.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.conf import settings

from .imaging import FileRejected, corrupt, human_bytes, too_large

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with entries; an empty archive
# Photos compress by a few percent at most; 100x is far beyond a real photo but typical of a
# bomb. Entries under 1 MB are let through whatever their ratio: they cannot exhaust anything.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1_000_000
# Folders and files that archivers and desktops add and that are never photos.
_SKIPPED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def unsafe_path() -> FileRejected:
    return FileRejected(
        "unsafe_path", "The entry's path is absolute or leaves the archive's folder; it was not extracted."
    )


def zip_bomb() -> FileRejected:
    return FileRejected(
        "zip_bomb",
        f"The entry is compressed more than {MAX_COMPRESSION_RATIO} times, like a zip bomb; it was not extracted.",
    )


def archive_bomb(total: int, compressed: int) -> FileRejected:
    return FileRejected(
        "zip_bomb",
        f"The archive expands to {human_bytes(total)} from {human_bytes(compressed)}, "
        f"more than {MAX_COMPRESSION_RATIO} times, like a zip bomb; nothing was extracted.",
    )


def too_many_entries(count: int, limit: int) -> FileRejected:
    return FileRejected("archive_too_large", f"The archive has {count:,} entries, more than the limit of {limit:,}.")


def expands_too_much(total: int, limit: int) -> FileRejected:
    return FileRejected(
        "archive_too_large",
        f"The archive expands to {human_bytes(total)}, more than the limit of {human_bytes(limit)}.",
    )


def empty_archive() -> FileRejected:
    return FileRejected("empty_archive", "The archive contains no files to import.")


def encrypted() -> FileRejected:
    return FileRejected("unsupported_format", "Encrypted archive entries are not supported.")


def _bomb_ratio(expanded: int, compressed: int) -> bool:
    return expanded > MAX_COMPRESSION_RATIO * max(compressed, 1)


def is_zip(fileobj: IO[bytes], name: str) -> bool:
    """A .zip by name, or by its first bytes when the stream can be rewound."""
    if name.lower().endswith(".zip"):
        return True
    if not _seekable(fileobj):
        return False
    position = fileobj.tell()
    head = fileobj.read(4)
    fileobj.seek(position)
    return head in ZIP_SIGNATURES


def _seekable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, ValueError):
        return False


def is_unsafe_name(name: str) -> bool:
    """Would this entry name leave the folder it is extracted into (on any OS)?"""
    if not name or "\x00" in name or "\\" in name:  # backslash: a separator on Windows
        return True
    if name.startswith("/") or _DRIVE_LETTER.match(name):
        return True
    return ".." in name.split("/")


def is_skipped_name(name: str) -> bool:
    """Folders, dotfiles and desktop metadata (`__MACOSX/`, `.DS_Store`, `Thumbs.db`)."""
    parts = [part for part in name.split("/") if part]
    return any(part.startswith(".") or part.lower() in _SKIPPED_NAMES for part in parts)


@dataclass
class ArchiveEntry:
    name: str  # as stored in the archive, used as the photo's original_name
    info: zipfile.ZipInfo
    rejection: FileRejected | None  # set when the entry is refused without being read
    skipped: bool = False  # desktop metadata: reported, not read


class EntryStream:
    """An entry's bytes; a read error of the archive (CRC, truncated data) is a `corrupt` file."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
        self._archive = archive
        self._info = info
        self._stream: IO[bytes] | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            if self._stream is None:
                self._stream = self._archive.open(self._info)
            return self._stream.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError):
            raise corrupt() from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> "EntryStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ZipArchive:
    """An open zip archive whose limits have been checked; iterate `entries()`."""

    def __init__(self, fileobj: IO[bytes]):
        try:
            self._zip = zipfile.ZipFile(fileobj)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
            raise corrupt() from None
        max_entries = settings.CLETIR_MAX_ARCHIVE_ENTRIES
        if len(infos) > max_entries:
            raise too_many_entries(len(infos), max_entries)
        total = sum(info.file_size for info in infos if not info.is_dir())
        max_bytes = settings.CLETIR_MAX_ARCHIVE_BYTES
        if total > max_bytes:
            compressed = sum(info.compress_size for info in infos if not info.is_dir())
            if _bomb_ratio(total, compressed):
                raise archive_bomb(total, compressed)
            raise expands_too_much(total, max_bytes)
        self._infos = infos

    def entries(self) -> Iterator[ArchiveEntry]:
        """The entries to report on, in archive order; folders are left out."""
        max_file = settings.CLETIR_MAX_UPLOAD_BYTES
        for info in self._infos:
            name = info.filename
            if is_unsafe_name(name):
                # Checked before skipping, so `../.hidden` is reported rather than ignored.
                yield ArchiveEntry(name, info, unsafe_path())
                continue
            if info.is_dir():
                continue
            if is_skipped_name(name):
                yield ArchiveEntry(name, info, None, skipped=True)
                continue
            rejection = None
            if info.flag_bits & 0x1:
                rejection = encrypted()
            elif info.file_size >= RATIO_CHECK_MIN_BYTES and _bomb_ratio(info.file_size, info.compress_size):
                rejection = zip_bomb()
            elif info.file_size > max_file:
                rejection = too_large(max_file)
            yield ArchiveEntry(name, info, rejection)

    def open(self, entry: ArchiveEntry) -> EntryStream:
        return EntryStream(self._zip, entry.info)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "ZipArchive":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
