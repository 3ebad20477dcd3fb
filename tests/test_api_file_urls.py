"""Every file URL an API payload holds answers the API's own authentication (a token, or the
session) with the file's bytes, and applies the caller's current access (404 otherwise)."""
from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from assets.models import Library, LibraryMembership, Rendition
from retrieval.models import Album, AlbumPhoto, EmbeddingSpace, ProxyImage, ProxySet, Search
from tests.stored_results import store_ranked
from tests.photos import write_photos

pytestmark = pytest.mark.django_db


def _image_file(media_root, relative: str, value: int, fmt: str) -> str:
    path = media_root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, fmt)
    return relative


@pytest.fixture
def world(make_user, media_root):
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    library = Library.objects.create(name="Harbour", owner=ann)
    LibraryMembership.objects.create(library=library, user=cid, role=LibraryMembership.Role.VIEWER)
    photo = write_photos(media_root, library, 1)[0]
    Rendition.objects.create(asset=photo, name="thumb", width=8, height=8,
                             file=_image_file(media_root, "renditions/t.webp", 10, "WEBP"))
    Rendition.objects.create(asset=photo, name="preview", width=8, height=8,
                             file=_image_file(media_root, "renditions/p.jpg", 20, "JPEG"))
    space = EmbeddingSpace.objects.create(
        name="tiny", profile="tiny", vlm_model="v", vision_model="d", generator_model="g", vlm_dim=2, vision_dim=2,
        fingerprint="f" * 64, is_active=True, is_serving=True)
    proxies = ProxySet.objects.create(query="boat", space=space, generator_key="g", seeds=[0], seeds_key="0",
                                      prompt="a photo of a boat", features=b"")
    ProxyImage.objects.create(proxy_set=proxies, index=0, seed=0,
                              file=_image_file(media_root, "proxies/0.webp", 30, "WEBP"))
    search = Search.objects.create(user=ann, text="boat", k=1, status=Search.Status.DONE, space=space,
                                   proxy_set=proxies, result_count=1, match_count=1)
    search.libraries.set([library])
    store_ranked(search, [(photo, 0.9, 0.4, 0.5)])
    album = Album.objects.create(user=ann, name="Boats", query_vector=b"", cutoff=0.1, source_search=search)
    album.libraries.set([library])
    AlbumPhoto.objects.create(album=album, asset=photo, score=0.9)
    return {"ann": ann, "bob": bob, "cid": cid, "library": library, "photo": photo, "search": search, "album": album,
            "media_root": media_root}


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def file_urls_in_payloads(client: APIClient, world) -> dict[str, str]:
    """Every file URL the API gives Ann, by where it came from."""
    asset = client.get(f"/api/assets/{world['photo'].pk}/").json()
    search = client.get(f"/api/searches/{world['search'].pk}/").json()
    result = client.get(f"/api/searches/{world['search'].pk}/results/").json()["results"][0]
    album_photo = client.get(f"/api/albums/{world['album'].pk}/photos/").json()["results"][0]
    return {
        "asset file_url": asset["file_url"], "asset thumbnail_url": asset["thumbnail_url"],
        "asset preview_url": asset["preview_url"], "proxy image_url": search["proxies"][0]["image_url"],
        "result photo_url": result["photo_url"], "result thumbnail_url": result["thumbnail_url"],
        "album thumbnail_url": album_photo["thumbnail_url"],
    }


def read(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_every_file_url_of_the_api_answers_a_token_with_the_bytes(world):
    ann = token_client(world["ann"])
    urls = file_urls_in_payloads(ann, world)
    photo = world["photo"]
    expected = {
        "asset file_url": photo.file.path, "result photo_url": photo.file.path,
        "asset thumbnail_url": photo.renditions.get(name="thumb").file.path,
        "result thumbnail_url": photo.renditions.get(name="thumb").file.path,
        "album thumbnail_url": photo.renditions.get(name="thumb").file.path,
        "asset preview_url": photo.renditions.get(name="preview").file.path,
        "proxy image_url": world["search"].proxy_set.images.get().file.path,
    }
    for source, url in urls.items():
        response = ann.get(url)
        assert response.status_code == 200, (source, url, response.status_code)
        with open(expected[source], "rb") as file:
            assert read(response) == file.read(), source
        assert "Authorization" in response["Vary"], source


def test_another_users_token_gets_404_for_every_file_url(world):
    urls = file_urls_in_payloads(token_client(world["ann"]), world)
    bob = token_client(world["bob"])
    for source, url in urls.items():
        assert bob.get(url).status_code == 404, source


def test_a_member_removed_from_the_library_loses_its_files_at_once(world):
    urls = file_urls_in_payloads(token_client(world["ann"]), world)
    cid = token_client(world["cid"])
    assert cid.get(urls["asset file_url"]).status_code == 200
    LibraryMembership.objects.filter(user=world["cid"]).delete()
    for source in ("asset file_url", "asset thumbnail_url", "asset preview_url"):
        assert cid.get(urls[source]).status_code == 404, source


def test_without_credentials_a_program_gets_401_and_a_browser_the_login_page(world):
    url = f"/photos/{world['photo'].pk}/file"
    anonymous = APIClient().get(url, HTTP_ACCEPT="*/*")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Token"
    assert anonymous.json() == {"detail": "Authentication credentials were not provided."}

    wrong = APIClient().get(url, HTTP_AUTHORIZATION="Token not-a-token")
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid token."}

    browser = Client().get(url, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert browser.status_code == 302 and browser["Location"] == f"/accounts/login/?next={url}"


def test_the_session_still_works_for_pages(world):
    client = Client()
    client.force_login(world["ann"])
    response = client.get(f"/photos/{world['photo'].pk}/thumb")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"


def test_the_api_answers_an_unauthenticated_request_with_401_and_a_token_challenge(world):
    response = APIClient().get("/api/libraries/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
