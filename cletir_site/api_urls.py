"""The REST API under /api/: one router for every app's viewsets."""
from django.urls import path
from rest_framework.routers import DefaultRouter

from assets.api import AssetViewSet, LibraryViewSet
from cletir_site.login_limits import ObtainTokenView
from retrieval.albums.api import AlbumViewSet
from retrieval.api import AssetIndexStatusView, LibraryIndexProgressView, SearchViewSet

router = DefaultRouter()
router.register("libraries", LibraryViewSet, basename="library")
router.register("assets", AssetViewSet, basename="asset")
router.register("searches", SearchViewSet, basename="search")
router.register("albums", AlbumViewSet, basename="album")

urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("libraries/<int:pk>/progress/", LibraryIndexProgressView.as_view(), name="library-progress"),
    path("assets/<int:pk>/index-status/", AssetIndexStatusView.as_view(), name="asset-index-status"),
    *router.urls,
]
