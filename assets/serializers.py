from django.urls import reverse
from rest_framework import serializers

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


class AssetSerializer(serializers.ModelSerializer):
    file_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = ["id", "library", "original_name", "width", "height", "format", "size_bytes", "taken_at",
                  "created_at", "status", "error", "file_url", "thumbnail_url", "preview_url"]

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
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["stored", "duplicate", "rejected"])
    asset_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    message = serializers.CharField(allow_null=True)


class UploadResultSerializer(serializers.Serializer):
    stored = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = UploadOutcomeSerializer(many=True)
