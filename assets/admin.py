from django.contrib import admin
from django.db.models import Count

from .models import Asset, Library, LibraryMembership, RejectedFile
from .services import delete_assets, delete_library


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


@admin.register(Asset)
class AssetAdmin(DeleteThroughServices, admin.ModelAdmin):
    list_display = ["__str__", "library", "status", "error", "width", "height", "taken_at", "created_at"]
    list_filter = ["status", "library"]
    search_fields = ["original_name", "sha256"]
    readonly_fields = ["sha256", "size_bytes", "width", "height", "format", "created_at", "uploaded_by"]
    list_select_related = ["library"]
    raw_id_fields = ["library"]

    def delete_queryset(self, request, queryset):
        delete_assets(queryset)


@admin.register(RejectedFile)
class RejectedFileAdmin(admin.ModelAdmin):
    list_display = ["original_name", "library", "reason", "message", "uploaded_by", "created_at"]
    list_filter = ["reason", "library"]
    search_fields = ["original_name"]
    readonly_fields = ["library", "uploaded_by", "original_name", "reason", "message", "created_at"]
