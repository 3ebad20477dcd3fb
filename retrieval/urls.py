from django.urls import path

from . import views

urlpatterns = [
    path("search/", views.search_home, name="search-home"),
    path("search/<int:pk>/", views.search_detail, name="search-detail"),
    path("search/<int:pk>/refine", views.search_refine, name="search-refine"),
    path("search/<int:pk>/proxies/<int:index>", views.proxy_image, name="search-proxy-image"),
    path("search/<int:pk>/examples/<int:example_id>", views.example_image, name="search-example-image"),
    path("proxy-images/<int:image_id>", views.admin_proxy_image, name="admin-proxy-image"),
]
