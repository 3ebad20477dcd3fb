from django.urls import path, re_path

from . import views
from .albums import views as album_views

urlpatterns = [
    path("search/", views.search_home, name="search-home"),
    path("search/<int:pk>/", views.search_detail, name="search-detail"),
    path("search/<int:pk>/refine", views.search_refine, name="search-refine"),
    path("search/<int:pk>/proxies/<int:index>", views.proxy_image, name="search-proxy-image"),
    path("search/<int:pk>/examples/<int:example_id>", views.example_image, name="search-example-image"),
    path("proxy-images/<int:image_id>", views.admin_proxy_image, name="admin-proxy-image"),
    re_path(r"^search/(?P<pk>[0-9]+)/export\.(?P<kind>csv|zip)$", views.search_export, name="search-export"),
]

# Smart albums (retrieval.albums).
urlpatterns += [
    path("albums/", album_views.album_list, name="album-list"),
    path("albums/<int:pk>/", album_views.album_detail, name="album-detail"),
    path("albums/<int:pk>/audit", album_views.album_audit, name="album-audit"),
    path("albums/<int:pk>/delete", album_views.album_delete, name="album-delete"),
    path("albums/<int:pk>/share", album_views.album_share, name="album-share"),
    path("albums/<int:pk>/photos/<int:asset_id>/state", album_views.album_photo_state, name="album-photo-state"),
    path("search/<int:pk>/save-album", album_views.album_from_search, name="search-save-album"),
    re_path(r"^albums/(?P<pk>[0-9]+)/export\.(?P<kind>csv|zip)$", album_views.album_export, name="album-export"),
]
