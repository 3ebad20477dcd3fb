from django.contrib import admin
from django.db.models import Count

from .models import Asset, Library, LibraryMembership, RejectedFile


class LibraryMembershipInline(admin.TabularInline):
    model = LibraryMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Library)
class LibraryAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "photo_count", "created_at"]
    search_fields = ["name", "owner__username"]
    autocomplete_fields = ["owner"]
    inlines = [LibraryMembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_photo_count=Count("assets"))

    @admin.display(description="photos", ordering="_photo_count")
    def photo_count(self, obj):
        return obj._photo_count


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "library", "status", "error", "width", "height", "taken_at", "created_at"]
    list_filter = ["status", "library"]
    search_fields = ["original_name", "sha256"]
    readonly_fields = ["sha256", "size_bytes", "width", "height", "format", "created_at", "uploaded_by"]
    list_select_related = ["library"]
    raw_id_fields = ["library"]


@admin.register(RejectedFile)
class RejectedFileAdmin(admin.ModelAdmin):
    list_display = ["original_name", "library", "reason", "message", "uploaded_by", "created_at"]
    list_filter = ["reason", "library"]
    search_fields = ["original_name"]
    readonly_fields = ["library", "uploaded_by", "original_name", "reason", "message", "created_at"]
