from django.urls import path

from . import views

urlpatterns = [
    path("", views.library_list, name="home"),
    path("libraries/new", views.library_create, name="library-create"),
    path("libraries/<int:pk>/", views.library_detail, name="library-detail"),
    path("libraries/<int:pk>/rename", views.library_rename, name="library-rename"),
    path("libraries/<int:pk>/delete", views.library_delete, name="library-delete"),
    path("libraries/<int:pk>/members", views.member_add, name="library-member-add"),
    path("libraries/<int:pk>/members/<int:user_id>/remove", views.member_remove, name="library-member-remove"),
    path("libraries/<int:pk>/photos/<int:asset_id>/", views.asset_detail, name="asset-detail"),
    path("photos/<int:asset_id>/file", views.asset_file, name="asset-file"),
    path("photos/<int:asset_id>/<slug:variant>", views.asset_file, name="asset-rendition"),
]
