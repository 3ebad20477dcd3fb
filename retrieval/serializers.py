"""API representations of searches and their results."""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Search, SearchResult
from .search.cutoff import Mixture
from .search.filters import DATE_RULE, MAX_CAMERA_TEXT, MAX_FILTER_KEYWORDS, STORED_FORMATS
from .search.query import MAX_QUERY_LENGTH
from .search.results import visible_photos
from .search.service import K_RANGE


class PhotoFiltersSerializer(serializers.Serializer):
    """The filters inside a search's scope (retrieval.search.filters): only photos passing all
    of them are ranked. Types only; the search service checks the values."""

    taken_from = serializers.DateField(required=False, allow_null=True, default=None,
                                       help_text=f"First day (YYYY-MM-DD, the site's time zone) of the {DATE_RULE}")
    taken_to = serializers.DateField(required=False, allow_null=True, default=None,
                                     help_text="Last day, included (same rule as taken_from)")
    camera_make = serializers.CharField(required=False, default="", allow_blank=True,
                                        help_text=f"Text in the camera make, any case (at most {MAX_CAMERA_TEXT} characters)")
    camera_model = serializers.CharField(required=False, default="", allow_blank=True,
                                         help_text=f"Text in the camera model, any case (at most {MAX_CAMERA_TEXT} characters)")
    keywords = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                     help_text=f"Embedded keywords the photo must all carry, any case (at most "
                                               f"{MAX_FILTER_KEYWORDS})")
    formats = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                    help_text=f"File types, any of: {', '.join(STORED_FORMATS)} (or a suffix: jpg, heic)")


class SearchCreateSerializer(PhotoFiltersSerializer):
    """Parses a search request (types only); what the values may be is checked once, by the search
    service, for the API and the pages alike (`retrieval.search.service`)."""

    text = serializers.CharField(required=False, default="", allow_blank=True, trim_whitespace=True,
                                 help_text=f"The category (at most {MAX_QUERY_LENGTH} characters); may be empty when "
                                           "examples are given")
    examples = serializers.ListField(child=serializers.IntegerField(), required=False, default=list,
                                     help_text="Photo ids to search by (extra proxies); alone: a search by example")
    libraries = serializers.ListField(child=serializers.IntegerField(), required=False, default=list,
                                      help_text="Library ids; empty: every library you can see")
    k = serializers.IntegerField(required=False, allow_null=True, default=None,
                                 help_text=f"Proxy images ({K_RANGE[0]}-{K_RANGE[1]}); default: the profile's")
    seed = serializers.IntegerField(required=False, default=0, help_text="Seed of the first proxy (non-negative)")
    lambda_override = serializers.FloatField(required=False, allow_null=True, default=None,
                                             help_text="λ between 0 (text only) and 1 (images only); default: the "
                                                       "trained or configured λ")
    text_only = serializers.BooleanField(required=False, default=False)

    def to_representation(self, instance):
        # What a created search answers: the search itself, as GET shows it.
        return SearchSerializer(instance, context=self.context).data


class SearchRefineSerializer(serializers.Serializer):
    """Parses a refinement (types only; checked by the search service). A refinement starts from
    everything the refined search had: a field left out keeps its value, a field given is the
    new complete value (send `positive_assets` with the earlier ids and the new one to add one)."""

    disabled_proxies = serializers.ListField(child=serializers.IntegerField(), required=False,
                                             help_text="Indexes of the proxies to switch off")
    positive_assets = serializers.ListField(child=serializers.IntegerField(), required=False,
                                            help_text="Photos to search more like")
    negative_assets = serializers.ListField(child=serializers.IntegerField(), required=False,
                                            help_text="Photos to push down")
    negative_text = serializers.CharField(required=False, allow_blank=True,
                                          help_text=f"What the photos must not show (at most {MAX_QUERY_LENGTH} characters)")
    kept_examples = serializers.ListField(child=serializers.IntegerField(), required=False,
                                          help_text="Ids of the refined search's uploaded examples to keep")


class ScoreComponentSerializer(serializers.Serializer):
    mean = serializers.FloatField()
    std = serializers.FloatField()
    weight = serializers.FloatField(help_text="Its share of the scope's photos")


class MatchMixtureSerializer(serializers.Serializer):
    background = ScoreComponentSerializer(help_text="The other photos of the scope")
    category = ScoreComponentSerializer(help_text="The photos of the query's category")


class ScoreHistogramSerializer(serializers.Serializer):
    low = serializers.FloatField(help_text="The lowest score: where the first bin starts")
    high = serializers.FloatField(help_text="The highest score: where the last bin ends")
    counts = serializers.ListField(child=serializers.IntegerField(), help_text="Photos per bin, in equal bins from "
                                   "`low` to `high` (64 bins; they add up to `photos`)")


class MatchEstimateSerializer(serializers.Serializer):
    photos = serializers.IntegerField(allow_null=True, help_text="Photos in the search's scope when it was counted")
    mixture = MatchMixtureSerializer(allow_null=True, help_text="The two Gaussians fitted on the scope's scores; null "
                                     "when no separate category stands out (then no photo is counted as a match)")
    histogram = ScoreHistogramSerializer(allow_null=True, help_text="The scope's scores (the fast ones the mixture "
                                         "is fitted on); null for a search counted before histograms were kept")


def match_estimate_payload(search: Search) -> dict | None:
    """The stored estimate as the API shows it; None until the matches are counted."""
    if search.match_count is None:
        return None
    stored = search.match_estimate or {}
    fit = Mixture.of_estimate(stored)
    mixture = None if fit is None else {
        "background": {"mean": fit.background[0], "std": fit.background[1], "weight": round(1.0 - fit.weight, 6)},
        "category": {"mean": fit.category[0], "std": fit.category[1], "weight": fit.weight},
    }
    return {"photos": stored.get("photos"), "mixture": mixture, "histogram": stored.get("histogram")}


class SearchSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    results_url = serializers.SerializerMethodField()
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    waiting = serializers.BooleanField(source="is_waiting", read_only=True,
                                       help_text="Queued behind your own earlier searches (at most "
                                                 "CLETIR_SEARCHES_IN_FLIGHT_PER_USER of yours run at a time)")
    libraries = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    positive_assets = serializers.SerializerMethodField(help_text="Example photos (of libraries you can see now)")
    negative_assets = serializers.SerializerMethodField(help_text="Negative photos (of libraries you can see now)")
    proxies = serializers.SerializerMethodField()
    space = serializers.CharField(source="space.name", default=None, read_only=True, allow_null=True)
    filters = PhotoFiltersSerializer(read_only=True, help_text="The filters inside the scope (a refinement keeps "
                                                               "its parent's)")
    match_estimate = serializers.SerializerMethodField(help_text="How `match_count` was estimated: the mixture fitted "
                                                       "on the scope's scores and their histogram; null until counted")

    class Meta:
        model = Search
        fields = ["id", "url", "results_url", "text", "libraries", "k", "seed", "lambda_override", "text_only",
                  "parent", "disabled_proxies", "positive_assets", "negative_assets", "negative_text", "filters", "status", "status_display", "waiting", "progress", "error",
                  "space", "lambda_used", "aggregation", "timings", "result_count", "match_count", "match_cutoff", "match_estimate", "proxies", "created_at",
                  "started_at", "finished_at"]

    def _absolute(self, name, *args):
        return self.context["request"].build_absolute_uri(reverse(name, args=args))

    def get_url(self, search) -> str:
        return self._absolute("api:search-detail", search.pk)

    def get_results_url(self, search) -> str:
        return self._absolute("api:search-results", search.pk)

    def _visible_ids(self, photos) -> list[int]:
        return list(visible_photos(photos, self.context["request"].user).values_list("pk", flat=True))

    def get_positive_assets(self, search) -> list[int]:
        return self._visible_ids(search.positive_assets)

    def get_negative_assets(self, search) -> list[int]:
        return self._visible_ids(search.negative_assets)

    @extend_schema_field(MatchEstimateSerializer(allow_null=True))
    def get_match_estimate(self, search) -> dict | None:
        return match_estimate_payload(search)

    def get_proxies(self, search) -> list[dict]:
        if search.proxy_set is None:
            return []
        disabled = set(search.disabled_proxies)
        return [
            {"index": image.index, "seed": image.seed, "enabled": image.index not in disabled,
             # null until the image is written, just after the ranking (search/proxies.py)
             "image_url": self._absolute("search-proxy-image", search.pk, image.index) if image.file else None}
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
