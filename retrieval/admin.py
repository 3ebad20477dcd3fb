"""Admin of indexes: embedding spaces (activate, progress) and index actions on libraries and
photos. `assets` knows nothing of indexing, so its admin classes are extended here."""
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from assets.admin import AssetAdmin, LibraryAdmin, shortened
from assets.models import Asset, Library

from .indexing.progress import STATES, in_state, index_progress, with_library_progress
from .indexing.services import activate_space, reindex
from .indexing.spaces import active_space
from .models import (
    Album,
    AlbumPhoto,
    AssetEmbedding,
    EmbeddingSpace,
    IndexingFailure,
    ProxySet,
    Search,
    SearchResult,
    WorkerHeartbeat,
)


def _reindex(modeladmin, request, assets):
    space = active_space()
    if space is None:
        modeladmin.message_user(request, "No embedding space is active: run manage.py activate_profile.", messages.ERROR)
        return
    count = reindex(space, assets)
    modeladmin.message_user(request, f"{count} photos queued for re-indexing into {space}.")


@admin.action(description="Re-index the photos of the selected libraries (active space)")
def reindex_libraries(modeladmin, request, queryset):
    _reindex(modeladmin, request, Asset.objects.filter(library__in=queryset))


@admin.action(description="Re-index the selected photos (active space)")
def reindex_assets(modeladmin, request, queryset):
    _reindex(modeladmin, request, queryset)


class IndexStatusFilter(admin.SimpleListFilter):
    title = "index status (active space)"
    parameter_name = "indexed"

    def lookups(self, request, model_admin):
        return [(state, state) for state in STATES]

    def queryset(self, request, queryset):
        space = active_space()
        if self.value() not in STATES or space is None:
            return queryset
        return in_state(queryset, space, self.value())


class IndexedLibraryAdmin(LibraryAdmin):
    list_display = [*LibraryAdmin.list_display, "index"]
    actions = [reindex_libraries]

    def get_queryset(self, request):
        # The index column's counts for the whole page in the list's own query.
        return with_library_progress(super().get_queryset(request), active_space())

    @admin.display(description="index (active space)")
    def index(self, library):
        pending = library.index_total - library.index_indexed - library.index_failed
        return f"{library.index_indexed} indexed · {pending} pending · {library.index_failed} failed"


class IndexedAssetAdmin(AssetAdmin):
    list_filter = [*AssetAdmin.list_filter, IndexStatusFilter]
    actions = [reindex_assets]


admin.site.unregister(Library)
admin.site.register(Library, IndexedLibraryAdmin)
admin.site.unregister(Asset)
admin.site.register(Asset, IndexedAssetAdmin)


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    list_display = ["name", "profile", "vlm_model", "vision_model", "dims", "is_active", "is_serving", "progress", "created_at"]
    list_filter = ["profile", "is_active", "is_serving"]
    readonly_fields = ["name", "profile", "vlm_model", "vision_model", "generator_model", "fingerprint", "versions",
                       "vlm_dim", "vision_dim", "is_active", "is_serving", "activated_at", "completed_at",
                       "indexing_queued_at", "created_at"]
    actions = ["activate"]

    def has_add_permission(self, request):
        return False  # spaces come from model profiles: manage.py activate_profile

    @admin.display(description="dims")
    def dims(self, obj):
        return f"{obj.vlm_dim} + {obj.vision_dim} = {obj.dim}"

    @admin.display(description="photos indexed")
    def progress(self, obj):
        p = index_progress(obj)
        if p.total == 0:
            return "no photos yet"
        return f"{p.indexed} / {p.total} indexed, {p.failed} failed ({p.percent}% done)"

    @admin.action(description="Activate (re-index every library into it; search switches when complete)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one space to activate.", messages.ERROR)
            return
        space = queryset.get()
        activate_space(space)
        self.message_user(request, f"{space} is active; every library is being indexed into it in the background.")


@admin.register(AssetEmbedding)
class AssetEmbeddingAdmin(admin.ModelAdmin):
    list_display = ["asset", "space", "created_at"]
    list_filter = ["space"]
    list_select_related = ["asset", "space"]
    # The vector itself is hundreds of numbers; nobody edits it by hand.
    exclude = ["vector"]
    readonly_fields = ["asset", "space", "created_at"]


@admin.register(IndexingFailure)
class IndexingFailureAdmin(admin.ModelAdmin):
    list_display = ["asset", "space", "short_error", "created_at"]
    list_filter = ["space"]
    list_select_related = ["asset", "space"]
    readonly_fields = ["asset", "space", "error", "created_at"]

    @admin.display(description="error")
    def short_error(self, failure):
        return shortened(failure.error, 60)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "pid", "started_at", "last_seen", "ranking_summary"]
    readonly_fields = ["hostname", "queues", "pid", "started_at", "last_seen", "ranking_summary"]
    exclude = ["ranking"]

    @admin.display(description="ranking")
    def ranking_summary(self, heartbeat):
        """Per pool process: the backend of each space, and what its in-memory copy holds."""
        lines = []
        for pid, report in sorted(heartbeat.ranking.items()):
            copies = report.get("copies", {})
            for space, choice in sorted(report.get("backends", {}).items()):
                copy = copies.get(space)
                held = f", {copy['photos']:,} photos, {copy['mb']} MB on {copy['device']}" if copy else ""
                lines.append((f"pid {pid}: space {space} by {choice['backend']}{held}", choice.get("reason", "")))
        if not lines:
            return "–"
        return format_html_join(mark_safe("<br>"), '<span title="{}">{}</span>', ((why, line) for line, why in lines))


class SearchResultInline(admin.TabularInline):
    model = SearchResult
    fields = ["rank", "asset", "score", "text_score", "image_score"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    ordering = ["rank"]

    def get_queryset(self, request):
        # The first page is what an admin checks; a search stores up to CLETIR_SEARCH_TOP_N rows.
        return super().get_queryset(request).filter(rank__lte=50).select_related("asset")


@admin.register(Search)
class SearchAdmin(admin.ModelAdmin):
    list_display = ["query", "user", "status", "result_count", "match_count", "total_seconds", "proxies_cached",
                    "created_at"]
    list_filter = ["status", "text_only", "aggregation"]
    search_fields = ["text", "user__username"]
    # The query vector is kilobytes of binary (a page thousands of pixels wide) and the timings
    # read better as the table below.
    readonly_fields = [f.name for f in Search._meta.fields if f.name not in ("query_vector", "timings")] + ["timings_table"]
    exclude = ["libraries", "positive_assets", "negative_assets", "query_vector", "timings"]
    inlines = [SearchResultInline]

    def has_add_permission(self, request):
        return False  # searches are made by users, through the pages and the API

    @admin.display(description="search", ordering="text")
    def query(self, search):
        return shortened(str(search))

    @admin.display(description="total s")
    def total_seconds(self, search):
        return search.timings.get("total")

    @admin.display(description="cached proxies", boolean=True)
    def proxies_cached(self, search):
        return search.timings.get("proxies_cached")

    @admin.display(description="timings")
    def timings_table(self, search):
        rows = "".join(f"<tr><th>{stage}</th><td>{value}</td></tr>" for stage, value in search.timings.items())
        return format_html("<table>{}</table>", mark_safe(rows))  # values come from the worker, not users


@admin.register(ProxySet)
class ProxySetAdmin(admin.ModelAdmin):
    list_display = ["short_query", "space", "k", "generation_seconds", "created_at"]
    list_filter = ["space"]
    search_fields = ["query"]
    readonly_fields = ["query", "space", "generator_key", "generator_versions", "seeds", "prompt",
                       "generation_seconds", "created_at", "images_preview"]
    exclude = ["features", "seeds_key"]

    def has_add_permission(self, request):
        return False  # proxy sets are generated by searches; delete one to force regeneration

    @admin.display(description="query", ordering="query")
    def short_query(self, proxy_set):
        return shortened(proxy_set.query)

    @admin.display(description="images")
    def images_preview(self, proxy_set):
        return format_html_join(
            "", '<img src="{}" alt="proxy {}" style="width:160px;height:160px;object-fit:cover;margin:4px">',
            ((reverse("admin-proxy-image", args=[image.pk]), image.index) for image in proxy_set.images.exclude(file="")),
        )


# --- Smart albums ----------------------------------------------------------------------------

class AlbumPhotoInline(admin.TabularInline):
    model = AlbumPhoto
    fields = ["asset", "score", "state", "added_at"]
    readonly_fields = ["asset", "score", "added_at"]
    extra = 0
    max_num = 0
    ordering = ["-score"]


@admin.register(Album)
class AlbumAdmin(admin.ModelAdmin):
    list_display = ["short_name", "user", "space", "derivation", "cutoff", "members", "shared", "created_at"]
    list_filter = ["space", "derivation", "shared"]
    search_fields = ["name", "user__username"]
    readonly_fields = ["space", "cutoff", "source_search", "proxy_set", "disabled_proxies", "text", "k", "seed",
                       "lambda_override", "text_only", "negative_text", "derivation", "derivation_error",
                       "derivation_queued_at", "derived_at", "created_at"]
    exclude = ["query_vector", "positive_assets", "negative_assets"]
    inlines = [AlbumPhotoInline]

    @admin.display(description="name", ordering="name")
    def short_name(self, album):
        return shortened(album.name)

    @admin.display(description="photos (by score or pinned)")
    def members(self, album):
        return album.photos.exclude(state=AlbumPhoto.State.REMOVED).count()
