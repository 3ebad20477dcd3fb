"""REST API of photo libraries."""
from django.db.models import Count
from rest_framework import viewsets

from .permissions import libraries_visible_to
from .serializers import LibrarySerializer


class LibraryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = LibrarySerializer

    def get_queryset(self):
        return (
            libraries_visible_to(self.request.user)
            .select_related("owner")
            .annotate(photo_count=Count("assets", distinct=True))
            .order_by("name", "id")
        )
