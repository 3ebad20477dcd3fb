from django.contrib import admin
from django.db.models import Count, Q
from django.utils.html import format_html
from django.utils.text import Truncator

from .metadata import normalise_keyword
from .models import Asset, Library, LibraryMembership, RejectedFile
from .services import delete_assets, delete_library


def shortened(text: str, length: int = 48) -> str:
    """A long cell of a list page cut to `length` characters, whole in its tooltip: file names
    with their folders, error messages and keyword lists would otherwise widen the table past
    the screen."""
    text = text or ""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(length))


class LibraryColumn:
    """The library of a list's row, its long name cut."""

    @admin.display(description="library", ordering="library__name")
    def library_name(self, obj):
        return shortened(obj.library.name, 32)


class DeleteThroughServices:
    """The admin deletes the way the pages and the API do (assets.services): files go with
    their rows, and the locks that make deleting during uploads and indexing safe are taken."""

    def delete_model(self, request, obj):
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))


class LibraryMembershipInline(admin.TabularInline):
    model = LibraryMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Library)
class LibraryAdmin(DeleteThroughServices, admin.ModelAdmin):
    list_display = ["name", "owner", "photo_count", "created_at"]
    search_fields = ["name", "owner__username"]
    autocomplete_fields = ["owner"]
    inlines = [LibraryMembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_photo_count=Count("assets"))

    def delete_queryset(self, request, queryset):
        for library in queryset:
            delete_library(library)

    @admin.display(description="photos", ordering="_photo_count")
    def photo_count(self, obj):
        return obj._photo_count


class EmbeddedMetadataFilter(admin.SimpleListFilter):
    """Photos by what their embedded blocks gave: keywords, a position, or a block that could
    not be read."""

    title = "embedded metadata"
    parameter_name = "metadata"
    CHOICES = {
        "keywords": ("with keywords", ~Q(keywords=[])),
        "no_keywords": ("without keywords", Q(keywords=[])),
        "gps": ("with a GPS position", Q(latitude__isnull=False)),
        "error": ("a block could not be read", ~Q(metadata_error="")),
        "unread": ("not read yet (manage.py read_photo_metadata)", Q(metadata_version=0)),
    }

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _) in self.CHOICES.items()]

    def queryset(self, request, queryset):
        choice = self.CHOICES.get(self.value())
        return queryset.filter(choice[1]) if choice else queryset


@admin.register(Asset)
class AssetAdmin(LibraryColumn, DeleteThroughServices, admin.ModelAdmin):
    list_display = ["name", "library_name", "state", "size", "taken_at", "camera", "keyword_list", "created_at"]
    list_filter = ["status", "library", EmbeddedMetadataFilter, "camera_make"]
    search_fields = ["original_name", "sha256", "title", "caption", "creator", "camera_model"]
    search_help_text = ("Name, hash, title, caption, creator or camera model contain the words; "
                        "or a photo has the whole text as a keyword.")
    readonly_fields = ["sha256", "size_bytes", "width", "height", "format", "created_at", "uploaded_by",
                       "metadata_error", "metadata_version"]
    list_select_related = ["library"]
    raw_id_fields = ["library"]
    fieldsets = [
        (None, {"fields": ["library", "file", "original_name", "uploaded_by", "status", "error", "sha256", "size_bytes",
                           "width", "height", "format", "taken_at", "created_at"]}),
        ("Embedded metadata (XMP, IPTC, EXIF)", {"fields": [
            "title", "caption", "keywords", "creator", "copyright", "camera_make", "camera_model", "latitude",
            "longitude", "metadata_error", "metadata_version"]}),
    ]

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        keyword = normalise_keyword(search_term)
        if keyword:  # from the list-filtered queryset; the GIN index on keywords answers it
            found |= queryset.filter(keywords__contains=[keyword])
        return found, may_have_duplicates

    @admin.display(description="photo", ordering="original_name")
    def name(self, obj):
        return shortened(str(obj))

    @admin.display(description="status", ordering="status")
    def state(self, obj):
        return shortened(f"{obj.get_status_display()}: {obj.error}" if obj.error else obj.get_status_display(), 40)

    @admin.display(description="pixels", ordering="width")
    def size(self, obj):
        return f"{obj.width} × {obj.height}" if obj.width else "-"

    @admin.display(description="camera", ordering="camera_model")
    def camera(self, obj):
        return shortened(" ".join(part for part in (obj.camera_make, obj.camera_model) if part), 24)

    @admin.display(description="keywords")
    def keyword_list(self, obj):
        return shortened(", ".join(obj.keywords), 32)

    def delete_queryset(self, request, queryset):
        delete_assets(queryset)


@admin.register(RejectedFile)
class RejectedFileAdmin(LibraryColumn, admin.ModelAdmin):
    list_display = ["name", "library_name", "reason", "short_message", "uploaded_by", "created_at"]
    list_select_related = ["library", "uploaded_by"]
    list_filter = ["reason", "library"]
    search_fields = ["original_name"]
    readonly_fields = ["library", "uploaded_by", "original_name", "reason", "message", "created_at"]

    @admin.display(description="file", ordering="original_name")
    def name(self, obj):
        return shortened(obj.original_name)

    @admin.display(description="message")
    def short_message(self, obj):
        return shortened(obj.message, 60)
