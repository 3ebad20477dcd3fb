"""The REST API under /api/: one router for every app's viewsets."""
from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from assets.api import LibraryViewSet

router = DefaultRouter()
router.register("libraries", LibraryViewSet, basename="library")

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    *router.urls,
]
