"""API representations of searches and their results."""
from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from .models import Search, SearchResult
from .search_service import MAX_QUERY_LENGTH


class SearchCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_QUERY_LENGTH, required=False, default="", allow_blank=True,
                                 trim_whitespace=True, help_text="The category; may be empty when examples are given")
    examples = serializers.ListField(child=serializers.IntegerField(), required=False, default=list,
                                     help_text="Photo ids to search by (extra proxies); alone: a search by example")
    libraries = serializers.ListField(child=serializers.IntegerField(), required=False, default=list,
                                      help_text="Library ids; empty: every library you can see")
    k = serializers.IntegerField(required=False, allow_null=True, default=None, help_text="Proxy images (1-16); default: the profile's")
    seed = serializers.IntegerField(required=False, default=0, min_value=0)
    lambda_override = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0.0, max_value=1.0)
    text_only = serializers.BooleanField(required=False, default=False)


class SearchRefineSerializer(serializers.Serializer):
    disabled_proxies = serializers.ListField(child=serializers.IntegerField(min_value=0), required=False, default=list)
    positive_assets = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    negative_assets = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    negative_text = serializers.CharField(max_length=MAX_QUERY_LENGTH, required=False, default="", allow_blank=True)


class SearchSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    results_url = serializers.SerializerMethodField()
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    libraries = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    positive_assets = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    negative_assets = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    proxies = serializers.SerializerMethodField()
    space = serializers.CharField(source="space.name", default=None, read_only=True, allow_null=True)

    class Meta:
        model = Search
        fields = ["id", "url", "results_url", "text", "libraries", "k", "seed", "lambda_override", "text_only",
                  "parent", "disabled_proxies", "positive_assets", "negative_assets", "negative_text", "status", "status_display", "progress", "error",
                  "space", "lambda_used", "aggregation", "timings", "result_count", "match_count", "match_cutoff", "proxies", "created_at",
                  "started_at", "finished_at"]

    def _absolute(self, name, *args):
        return self.context["request"].build_absolute_uri(reverse(name, args=args))

    def get_url(self, search) -> str:
        return self._absolute("api:search-detail", search.pk)

    def get_results_url(self, search) -> str:
        return self._absolute("api:search-results", search.pk)

    def get_proxies(self, search) -> list[dict]:
        if search.proxy_set is None:
            return []
        disabled = set(search.disabled_proxies)
        return [
            {"index": image.index, "seed": image.seed, "enabled": image.index not in disabled,
             "image_url": self._absolute("search-proxy-image", search.pk, image.index)}
            for image in search.proxy_set.images.all()
        ]


class SearchResultSerializer(serializers.ModelSerializer):
    asset_id = serializers.IntegerField()
    library_id = serializers.IntegerField(source="asset.library_id")
    thumbnail_url = serializers.SerializerMethodField()
    photo_url = serializers.SerializerMethodField()

    class Meta:
        model = SearchResult
        fields = ["rank", "asset_id", "library_id", "score", "text_score", "image_score", "thumbnail_url", "photo_url"]

    def get_thumbnail_url(self, result) -> str:
        return self.context["request"].build_absolute_uri(reverse("asset-rendition", args=[result.asset_id, "thumb"]))

    def get_photo_url(self, result) -> str:
        return self.context["request"].build_absolute_uri(reverse("asset-file", args=[result.asset_id]))
