from django.contrib import admin
from django.db.models import Count

from .models import AssetEmbedding, EmbeddingSpace, WorkerHeartbeat


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    list_display = ["name", "profile", "vlm_model", "vision_model", "dims", "is_active", "embedded", "created_at"]
    list_filter = ["profile", "is_active"]
    readonly_fields = ["fingerprint", "versions", "vlm_dim", "vision_dim", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_embedded=Count("embeddings"))

    @admin.display(description="dims")
    def dims(self, obj):
        return f"{obj.vlm_dim} + {obj.vision_dim} = {obj.dim}"

    @admin.display(description="photos embedded", ordering="_embedded")
    def embedded(self, obj):
        return obj._embedded


@admin.register(AssetEmbedding)
class AssetEmbeddingAdmin(admin.ModelAdmin):
    list_display = ["asset", "space", "created_at"]
    list_filter = ["space"]
    list_select_related = ["asset", "space"]
    raw_id_fields = ["asset"]
    # The vector itself is hundreds of numbers; nobody edits it by hand.
    exclude = ["vector"]
    readonly_fields = ["asset", "space", "created_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "pid", "started_at", "last_seen"]
    readonly_fields = ["hostname", "queues", "pid", "started_at", "last_seen"]
