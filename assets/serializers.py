from rest_framework import serializers

from .models import Library


class LibrarySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    photo_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Library
        fields = ["id", "name", "owner", "photo_count", "created_at"]
