"""The API can do what the library pages do: every page of assets/urls.py has its API operation,
and the member operations (remove, change role) and gallery orders behave as on the pages."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from assets.models import Asset, Library, LibraryMembership
from tests.photos import write_photos

pytestmark = pytest.mark.django_db

# Each library page (URL name in assets/urls.py) and the API operations that do the same.
PAGE_TO_API = {
    "home": [("get", "/api/libraries/")],
    "library-create": [("post", "/api/libraries/")],
    "library-detail": [("get", "/api/libraries/{id}/"), ("get", "/api/assets/"), ("get", "/api/libraries/{id}/rejected/"),
                       ("get", "/api/libraries/{id}/progress/"), ("post", "/api/libraries/{id}/upload/")],
    "library-rename": [("patch", "/api/libraries/{id}/")],
    "library-delete": [("delete", "/api/libraries/{id}/")],
    "library-member-add": [("get", "/api/libraries/{id}/members/"), ("post", "/api/libraries/{id}/members/")],
    "library-member-remove": [("delete", "/api/libraries/{id}/members/{username}/")],
    "asset-detail": [("get", "/api/assets/{id}/"), ("get", "/api/assets/{id}/index-status/")],
    "asset-file": [("get", "/api/assets/{id}/")],  # file_url: the same URL answers the API's token
    "asset-rendition": [("get", "/api/assets/{id}/")],  # thumbnail_url, preview_url
}


def test_every_library_page_has_its_api_operation(client, make_user):
    import assets.urls

    page_names = {pattern.name for pattern in assets.urls.urlpatterns}
    assert page_names == set(PAGE_TO_API)  # a new page joins the table with its API operation
    client.force_login(make_user("ann"))
    paths = client.get("/api/schema/?format=json").json()["paths"]
    for page, operations in PAGE_TO_API.items():
        for method, path in operations:
            assert method in paths.get(path, {}), (page, method, path)


@pytest.fixture
def team(make_user, media_root):
    ann, bob, eve, zed = make_user("ann"), make_user("bob"), make_user("eve"), make_user("zed")
    library = Library.objects.create(name="Harbour", owner=ann)
    LibraryMembership.objects.create(library=library, user=bob, role=LibraryMembership.Role.VIEWER)
    LibraryMembership.objects.create(library=library, user=eve, role=LibraryMembership.Role.EDITOR)
    photos = write_photos(media_root, library, 3)
    return {"ann": ann, "bob": bob, "eve": eve, "zed": zed, "library": library, "photos": photos}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_owner_removes_a_member_who_then_sees_nothing(team):
    library, photo = team["library"], team["photos"][0]
    bob = api(team["bob"])
    assert bob.get(f"/api/libraries/{library.pk}/").status_code == 200

    response = api(team["ann"]).delete(f"/api/libraries/{library.pk}/members/bob/")

    assert response.status_code == 204
    assert list(library.memberships.values_list("user__username", flat=True)) == ["eve"]
    for url in (f"/api/libraries/{library.pk}/", f"/api/assets/{photo.pk}/", f"/photos/{photo.pk}/file"):
        assert bob.get(url).status_code == 404, url
    assert bob.get("/api/libraries/").json() == []


def test_the_owner_changes_a_members_role(team):
    library = team["library"]
    response = api(team["ann"]).patch(f"/api/libraries/{library.pk}/members/bob/", {"role": "editor"}, format="json")
    assert response.status_code == 200 and response.json() == {"username": "bob", "role": "editor"}
    assert library.memberships.get(user=team["bob"]).role == "editor"
    # As an editor bob may now delete a photo, which a viewer may not.
    assert api(team["bob"]).delete(f"/api/assets/{team['photos'][0].pk}/").status_code == 204


def test_only_the_owner_manages_members(team):
    library = team["library"]
    url = f"/api/libraries/{library.pk}/members/bob/"
    editor, stranger = api(team["eve"]), api(team["zed"])
    assert editor.delete(url).status_code == 403
    assert editor.patch(url, {"role": "editor"}, format="json").status_code == 403
    assert stranger.delete(url).status_code == 404  # a library zed cannot see does not exist for him
    assert stranger.patch(url, {"role": "editor"}, format="json").status_code == 404
    assert library.memberships.get(user=team["bob"]).role == "viewer"


def test_member_operations_answer_clearly_for_bad_input(team):
    library, ann = team["library"], api(team["ann"])
    missing = ann.delete(f"/api/libraries/{library.pk}/members/zed/")
    assert missing.status_code == 404 and missing.json() == {"detail": "zed is no member of this library."}
    assert ann.delete(f"/api/libraries/{library.pk}/members/ann/").status_code == 404  # the owner is no member
    bad_role = ann.patch(f"/api/libraries/{library.pk}/members/bob/", {"role": "owner"}, format="json")
    assert bad_role.status_code == 400 and bad_role.json() == {"role": ['"owner" is not a valid choice.']}


def test_the_api_orders_photos_as_the_gallery_does(team):
    library, photos = team["library"], team["photos"]
    client = api(team["ann"])
    ids = lambda sort: [row["id"] for row in client.get(f"/api/assets/?library={library.pk}&sort={sort}").json()["results"]]  # noqa: E731
    newest_first = [p.pk for p in sorted(photos, key=lambda p: (p.created_at, p.pk), reverse=True)]
    assert ids("newest") == newest_first
    assert ids("oldest") == newest_first[::-1]
    Asset.objects.filter(pk=photos[0].pk).update(taken_at="2020-01-01T00:00:00Z")
    assert ids("taken")[0] == photos[0].pk
    refused = client.get(f"/api/assets/?library={library.pk}&sort=random")
    assert refused.status_code == 400 and refused.json() == {"sort": ["One of: newest, oldest, taken."]}
