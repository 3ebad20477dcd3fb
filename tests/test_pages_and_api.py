"""Pages, API and admin of the platform: who sees which library."""
from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from assets.models import Asset, Library, LibraryMembership

pytestmark = pytest.mark.django_db


@pytest.fixture
def libraries(make_user):
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    ann_lib = Library.objects.create(name="Ann's archive", owner=ann)
    bob_lib = Library.objects.create(name="Bob's boats", owner=bob)
    shared = Library.objects.create(name="Shared with Ann", owner=cid)
    LibraryMembership.objects.create(library=shared, user=ann, role=LibraryMembership.Role.VIEWER)
    for i in range(3):
        Asset.objects.create(library=ann_lib, sha256=f"{i:064x}", file=f"a/{i}.jpg")
    Asset.objects.create(library=bob_lib, sha256="b" * 64, file="b/1.jpg")
    return {"ann": ann, "bob": bob, "ann_lib": ann_lib, "bob_lib": bob_lib, "shared": shared}


def test_api_lists_only_visible_libraries_with_exact_payload(libraries):
    client = APIClient()
    token = Token.objects.create(user=libraries["ann"])
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.get("/api/libraries/")

    assert response.status_code == 200
    ann_lib, shared = libraries["ann_lib"], libraries["shared"]
    assert response.json() == [
        {"id": ann_lib.pk, "name": "Ann's archive", "owner": "ann", "photo_count": 3,
         "created_at": ann_lib.created_at.isoformat().replace("+00:00", "Z")},
        {"id": shared.pk, "name": "Shared with Ann", "owner": "cid", "photo_count": 0,
         "created_at": shared.created_at.isoformat().replace("+00:00", "Z")},
    ]


def test_api_denies_another_users_library_and_anonymous(libraries):
    client = APIClient()
    client.force_authenticate(libraries["ann"])
    assert client.get(f"/api/libraries/{libraries['bob_lib'].pk}/").status_code == 404
    anonymous = APIClient()
    assert anonymous.get("/api/libraries/").status_code in (401, 403)


def test_api_token_endpoint(libraries):
    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "pw-ann"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=libraries["ann"]).key}


def test_home_requires_login_and_shows_only_visible_libraries(client, libraries):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(libraries["ann"])
    page = client.get("/").content.decode()
    assert "Ann&#x27;s archive" in page and "Shared with Ann" in page
    assert "Bob&#x27;s boats" not in page


def test_login_page_and_schema_and_docs(client, libraries):
    assert client.get("/accounts/login/").status_code == 200
    client.force_login(libraries["ann"])
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/libraries/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()  # served from the installed sidecar, works offline


def test_admin_lists_libraries_for_staff_only(client, libraries, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="pw-root")
    client.force_login(libraries["ann"])
    assert client.get("/admin/assets/library/").status_code == 302  # not staff: to the admin login
    client.force_login(admin)
    page = client.get("/admin/assets/library/")
    assert page.status_code == 200
    assert b"Bob&#x27;s boats" in page.content
    assert client.get("/admin/retrieval/embeddingspace/").status_code == 200
