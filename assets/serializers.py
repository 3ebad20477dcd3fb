from django.urls import reverse
from rest_framework import serializers

from .ingest import FAILED_MESSAGES, NOT_A_PHOTO, STATUSES
from .models import Asset, Library, LibraryMembership, RejectedFile


class LibrarySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    photo_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Library
        fields = ["id", "name", "owner", "photo_count", "created_at"]

    def validate_name(self, value):
        name = value.strip()
        if not name:
            raise serializers.ValidationError("A library needs a name.")
        owner = self.instance.owner if self.instance else self.context["request"].user
        clash = Library.objects.filter(owner=owner, name=name)
        if self.instance:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("You already have a library with this name.")
        return name


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = LibraryMembership
        fields = ["username", "role"]


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=LibraryMembership.Role.choices)


# What the photo's own XMP, IPTC and EXIF blocks say (assets.metadata); "" or null when none did.
EMBEDDED_METADATA_HELP = {
    "title": "Title: XMP dc:title (x-default), else IPTC Object Name (2:05), else EXIF XPTitle.",
    "caption": "Caption: XMP dc:description, else IPTC Caption/Abstract (2:120), else EXIF ImageDescription.",
    "keywords": ("Keywords of XMP dc:subject, IPTC Keywords (2:25) and EXIF XPKeywords together, each once, "
                 "normalised: Unicode NFC, single spaces, lower case."),
    "creator": "Creator: XMP dc:creator, else IPTC By-line (2:80), else EXIF Artist; several joined by '; '.",
    "copyright": "Copyright: XMP dc:rights, else IPTC Copyright Notice (2:116), else EXIF Copyright.",
    "camera_make": "Camera maker: EXIF Make, else XMP tiff:Make.",
    "camera_model": "Camera model: EXIF Model, else XMP tiff:Model.",
    "latitude": "GPS latitude in WGS 84 degrees, north positive: EXIF GPS, else XMP exif:GPSLatitude.",
    "longitude": "GPS longitude in WGS 84 degrees, east positive.",
    "metadata_error": ("The embedded blocks that could not be read, one per line (`XMP: could not be read "
                       "(...)`); the photo is stored all the same, with what the other blocks gave. Empty when "
                       "all were read."),
}
EMBEDDED_METADATA_FIELDS = list(EMBEDDED_METADATA_HELP)


class AssetSerializer(serializers.ModelSerializer):
    file_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = ["id", "library", "original_name", "width", "height", "format", "size_bytes", "taken_at",
                  "created_at", "status", "error", "file_url", "thumbnail_url", "preview_url",
                  *EMBEDDED_METADATA_FIELDS]
        extra_kwargs = {"taken_at": {"help_text": (
            "When the photo was taken, from its EXIF data: DateTimeOriginal, else DateTimeDigitized, else "
            "DateTime (0x0132, which editing software may have rewritten); with the matching OffsetTime when "
            "the photo has one, otherwise in the site's time zone. Null when the photo has none of them."
        )}, **{name: {"help_text": text} for name, text in EMBEDDED_METADATA_HELP.items()}}

    def _rendition_url(self, asset, name) -> str | None:
        names = {r.name for r in asset.renditions.all()}  # prefetched by the viewset
        if name not in names:
            return None
        return self.context["request"].build_absolute_uri(reverse("asset-rendition", args=[asset.pk, name]))

    def get_file_url(self, asset) -> str:
        return self.context["request"].build_absolute_uri(reverse("asset-file", args=[asset.pk]))

    def get_thumbnail_url(self, asset) -> str | None:
        return self._rendition_url(asset, "thumb")

    def get_preview_url(self, asset) -> str | None:
        return self._rendition_url(asset, "preview")


class RejectedFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = RejectedFile
        fields = ["original_name", "reason", "message", "created_at"]


class UploadOutcomeSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The file's name as sent, or the entry's path inside its archive")
    status = serializers.ChoiceField(choices=list(STATUSES), help_text=(
        "stored: a new photo (asset_id). duplicate: the same bytes are already in the library (asset_id: that "
        "photo). rejected: the file is refused (reason, message). skipped: an archive entry that is desktop "
        f"metadata, not a photo (reason `{NOT_A_PHOTO}`). failed: the server kept nothing of the file; send "
        "it again (reason: " + ", ".join(f"`{reason}`" for reason in FAILED_MESSAGES) + ")."
    ))
    asset_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_null=True, help_text=(
        "rejected: " + ", ".join(f"`{value}`" for value in RejectedFile.Reason.values)
        + f". skipped: `{NOT_A_PHOTO}`. failed: `server_error` (a database or server failure; the files after "
        "it were not tried and carry the same reason), `library_deleted` (the library was deleted during the "
        "upload), `not_received` (the request ended before the file arrived whole)."
    ))
    message = serializers.CharField(allow_null=True, help_text="What happened, in a sentence for people")
    archive = serializers.CharField(allow_null=True, help_text="The zip archive the file came from, if any")


class UploadResultSerializer(serializers.Serializer):
    stored = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    skipped = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = UploadOutcomeSerializer(many=True)
