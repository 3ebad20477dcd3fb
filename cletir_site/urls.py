from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .health import healthz

admin.site.site_header = "cletir administration"
admin.site.site_title = "cletir admin"
# The lists of photos, searches and spaces need the screen's width: with the navigation sidebar
# and the filters beside them, a 1280 px screen leaves them ~630 px. The breadcrumbs and the
# index page lead everywhere the sidebar did.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", include("assets.urls")),
    path("", include("retrieval.urls")),
    path("healthz", healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include(("cletir_site.api_urls", "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

handler404 = "cletir_site.errors.not_found"
