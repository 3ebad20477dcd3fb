"""Photo libraries and the photos in them.

`assets` stores photos and announces them; it knows nothing of embeddings or searches
(ARCHITECTURE.md: `retrieval` depends on `assets`, never the other way round).
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class Library(models.Model):
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_libraries")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="LibraryMembership", related_name="shared_libraries", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "libraries"
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="library_name_unique_per_owner")]

    def __str__(self) -> str:
        return self.name


class LibraryMembership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        EDITOR = "editor", "Editor"

    library = models.ForeignKey(Library, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="library_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["library", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.library} ({self.role})"


def asset_upload_path(asset: "Asset", filename: str) -> str:
    # Content-addressed inside the library: the stored name never comes from user input, so an
    # uploaded name cannot escape MEDIA_ROOT or collide with another photo.
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"libraries/{asset.library_id}/{asset.sha256[:2]}/{asset.sha256}.{suffix}"


class Asset(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # stored, metadata/thumbnail not done yet
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    library = models.ForeignKey(Library, on_delete=models.CASCADE, related_name="assets")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Indexed: settling a PendingFile asks "does a row name this file?" (assets.media).
    file = models.FileField(upload_to=asset_upload_path, max_length=500, db_index=True)
    original_name = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    format = models.CharField(max_length=16, blank=True)
    taken_at = models.DateTimeField(null=True, blank=True, help_text="EXIF capture time, when the photo has one")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Which worker is making this photo's renditions, and since when (assets.renditions: a claim
    # keeps two workers off one photo without a lock held while it renders).
    renditions_claim = models.CharField(max_length=64, blank=True, default="")
    renditions_claimed_at = models.DateTimeField(null=True, blank=True)
    # What the photo says about itself, from its XMP, IPTC and EXIF blocks (assets.metadata).
    title = models.CharField(max_length=500, blank=True)
    caption = models.TextField(blank=True)
    # Normalised (assets.metadata.normalise_keyword: NFC, single spaces, lower case) so that a
    # filter matches "Golden Gate" however a camera or editor wrote it; an array in the row, with
    # a GIN index for `keywords__contains=[...]` (any photo with all these keywords) and
    # `keywords__overlap` (any of them), rather than a keyword table: one photo row carries its
    # keywords wherever it is read (pages, API, CSV) without a join or a prefetch.
    keywords = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    creator = models.CharField(max_length=500, blank=True)
    copyright = models.CharField(max_length=500, blank=True)
    camera_make = models.CharField(max_length=500, blank=True)
    camera_model = models.CharField(max_length=500, blank=True)
    latitude = models.FloatField(null=True, blank=True, help_text="GPS latitude, WGS 84 degrees (north positive)")
    longitude = models.FloatField(null=True, blank=True, help_text="GPS longitude, WGS 84 degrees (east positive)")
    metadata_error = models.TextField(
        blank=True, help_text="The embedded blocks that could not be read, and why (the photo is stored all the same)")
    # The reader (assets.metadata.METADATA_VERSION) that filled the fields above; 0: never read
    # (photos stored before metadata was read: `manage.py read_photo_metadata` reads them).
    metadata_version = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["library", "sha256"], name="asset_sha256_unique_per_library")]
        indexes = [
            models.Index(fields=["library", "-created_at"]), models.Index(fields=["library", "taken_at"]),
            GinIndex(fields=["keywords"], name="asset_keywords_gin"),
        ]

    def __str__(self) -> str:
        return self.original_name or self.sha256[:12]

    @property
    def has_embedded_metadata(self) -> bool:
        """Whether the photo's blocks gave any field (or could not be read)."""
        return any((self.title, self.caption, self.keywords, self.creator, self.copyright, self.camera_make,
                    self.camera_model, self.latitude is not None, self.metadata_error))


# The orders of a library's photos, on the gallery page and in the API (`sort`): newest upload
# first, oldest first, or by capture time (photos without one last, newest upload first among them).
PHOTO_SORTS = {
    "newest": ("-created_at", "-id"),
    "oldest": ("created_at", "id"),
    "taken": (models.F("taken_at").desc(nulls_last=True), "-id"),
}


def rendition_upload_path(rendition: "Rendition", filename: str) -> str:
    # Derived from the photo's content hash and the rendition name, never from user input: a
    # retried thumbnail task writes the same name again instead of a second file.
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    asset = rendition.asset
    return f"renditions/{asset.library_id}/{asset.sha256[:2]}/{asset.sha256}-{rendition.name}.{suffix}"


class Rendition(models.Model):
    """A derived image of a photo (thumbnail, preview), made once in the background."""

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="renditions")
    name = models.CharField(max_length=32)
    file = models.FileField(upload_to=rendition_upload_path, max_length=500, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset", "name"], name="one_rendition_per_name")]

    def __str__(self) -> str:
        return f"{self.asset} ({self.name})"


# The folders under MEDIA_ROOT that this app's upload_to functions write into.
ASSET_MEDIA_FOLDERS = ("libraries", "renditions")


class PendingFile(models.Model):
    """A file under MEDIA_ROOT whose row is not settled yet (assets.media).

    Recorded, and committed, before a file is moved into place for a row that is still being
    saved, and in the same transaction that deletes a row whose file is to be removed. Deleted
    in the transaction that saves the row, or once the file is removed. One left behind (the
    process was killed, the database went away) names a file that may have no row: the sweeper
    removes that file after a grace period unless a row or another PendingFile names it.
    """

    name = models.CharField(max_length=500, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.name


class QueuedTaskMark(models.Model):
    """That a task of some kind of background work is queued and has not started yet.

    Work that one task does for many rows (renditions of every pending photo) is queued once
    while such a task waits, instead of once per row: the mark is set by a conditional update
    when a task is sent and cleared by the task when it starts (assets.rendition_batches).
    """

    name = models.CharField(max_length=64, primary_key=True)
    queued_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} queued at {self.queued_at}" if self.queued_at else f"{self.name}: none queued"


class RejectedFile(models.Model):
    """A file that was offered to a library and refused, kept so the library page can say why."""

    class Reason(models.TextChoices):
        NOT_AN_IMAGE = "not_an_image", "Not an image"
        CORRUPT = "corrupt", "Corrupt"
        TOO_LARGE = "too_large", "Too large"
        DECOMPRESSION_BOMB = "decompression_bomb", "Decompression bomb"
        UNSUPPORTED_FORMAT = "unsupported_format", "Unsupported format"
        UNSAFE_PATH = "unsafe_path", "Unsafe path in archive"
        ZIP_BOMB = "zip_bomb", "Zip bomb"
        ARCHIVE_TOO_LARGE = "archive_too_large", "Archive too large"
        EMPTY_ARCHIVE = "empty_archive", "Empty archive"

    library = models.ForeignKey(Library, on_delete=models.CASCADE, related_name="rejected_files")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    original_name = models.CharField(max_length=500)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["library", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.original_name}: {self.reason}"


class ImportedFile(models.Model):
    """What `import_folder` has already seen, so a second run skips it without reading it.

    Keyed by the file's absolute path; a file whose size or modification time changed is read
    again (and deduplicated by content hash if only its timestamp moved).
    """

    class Outcome(models.TextChoices):
        STORED = "stored", "Stored"
        DUPLICATE = "duplicate", "Duplicate"
        REJECTED = "rejected", "Rejected"

    library = models.ForeignKey(Library, on_delete=models.CASCADE, related_name="imported_files")
    path = models.CharField(max_length=1024)
    size_bytes = models.BigIntegerField()
    mtime_ns = models.BigIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    asset = models.ForeignKey(Asset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["library", "path"], name="imported_path_unique_per_library")]

    def __str__(self) -> str:
        return self.path
