"""Searches through the API and the pages: creation, validation, privacy, paging, refining."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from assets.models import Asset, Library
from retrieval.search import service as search_service
from retrieval.models import Search
from tests.stored_results import store_ranked

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(search_service, "queue_search", lambda search: sent.append(search.pk))
    return sent


@pytest.fixture
def world(make_user):
    ann, bob = make_user("ann"), make_user("bob")
    harbour = Library.objects.create(name="Harbour", owner=ann)
    secret = Library.objects.create(name="Bob's", owner=bob)
    photos = [Asset.objects.create(library=harbour, sha256=f"{i:064x}", file=f"x/{i}.jpg") for i in range(130)]
    bob_photo = Asset.objects.create(library=secret, sha256="f" * 64, file="y/1.jpg")
    return {"ann": ann, "bob": bob, "harbour": harbour, "secret": secret, "photos": photos, "bob_photo": bob_photo}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_post_search_answers_202_with_its_url_and_queues_it(world, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(world["ann"]).post("/api/searches/", {"text": "  sailing   boat ", "libraries": [world["harbour"].pk],
                                                             "k": 4, "seed": 7}, format="json")
    assert response.status_code == 202
    search = Search.objects.get()
    body = response.json()
    assert response["Location"] == body["url"] == f"http://testserver/api/searches/{search.pk}/"
    assert queued == [search.pk]
    assert {k: body[k] for k in ("text", "libraries", "k", "seed", "lambda_override", "text_only", "status",
                                 "status_display", "progress", "result_count", "proxies", "parent")} == {
        "text": "sailing boat", "libraries": [world["harbour"].pk], "k": 4, "seed": 7, "lambda_override": None,
        "text_only": False, "status": "queued", "status_display": "Queued", "progress": 0, "result_count": 0,
        "proxies": [], "parent": None,
    }
    assert body["results_url"] == f"http://testserver/api/searches/{search.pk}/results/"


@pytest.mark.parametrize("payload, errors", [
    ({"text": ""}, {"text": ["Type what to search for (a category such as “sailboat”)."]}),
    ({"text": "", "text_only": True}, {"text": ["Type what to search for (a category such as “sailboat”)."],
                                       "text_only": ["A text-only search needs a text."]}),
    ({"text": "x" * 301}, {"text": ["At most 300 characters (this has 301)."]}),
    ({"text": "boat", "k": 0}, {"k": ["K (proxy images) must be between 1 and 16."]}),
    ({"text": "boat", "k": 99}, {"k": ["K (proxy images) must be between 1 and 16."]}),
    ({"text": "boat", "lambda_override": 1.5}, {"lambda_override": ["λ must be between 0 (text only) and 1 (images only)."]}),
    ({"text": "boat", "seed": -1}, {"seed": ["The seed must be a non-negative integer."]}),
])
def test_bad_search_input_is_a_clear_400(world, queued, payload, errors):
    response = api(world["ann"]).post("/api/searches/", payload, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not Search.objects.exists() and queued == []


def test_search_by_example_photo_alone(world, queued, client):
    photo = world["photos"][3]
    response = api(world["ann"]).post("/api/searches/", {"examples": [photo.pk]}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["text"] == "" and body["positive_assets"] == [photo.pk]
    foreign = api(world["ann"]).post("/api/searches/", {"examples": [world["bob_photo"].pk]}, format="json")
    assert foreign.status_code == 400
    assert foreign.json() == {"examples": [f"No such photo: {world['bob_photo'].pk}."]}  # the field the client sent
    client.force_login(world["ann"])  # the photo page's "Find photos like this" button
    page = client.post("/search/", {"text": "", "examples": [photo.pk], "seed": "0"})
    search = Search.objects.order_by("-pk").first()
    assert page.status_code == 302 and list(search.positive_assets.all()) == [photo]


def test_a_library_you_cannot_see_is_refused_like_one_that_does_not_exist(world, queued):
    response = api(world["ann"]).post("/api/searches/", {"text": "boat", "libraries": [world["secret"].pk]}, format="json")
    missing = api(world["ann"]).post("/api/searches/", {"text": "boat", "libraries": [999999]}, format="json")
    assert response.status_code == missing.status_code == 400
    assert response.json() == {"libraries": [f"No such library: {world['secret'].pk}."]}
    assert missing.json() == {"libraries": ["No such library: 999999."]}


def _done_search(world, n=130):
    search = Search.objects.create(user=world["ann"], text="boat", k=4, status=Search.Status.DONE, progress=100,
                                   result_count=n)
    store_ranked(search, [(world["photos"][i], 1 - i / 1000, 0.5 - i / 2000, 0.5 - i / 2000) for i in range(n)])
    return search


def test_results_pages_return_every_result_exactly_once_in_rank_order(world):
    search = _done_search(world)
    client = api(world["ann"])
    seen, url = [], f"/api/searches/{search.pk}/results/?size=50"
    while url:
        page = client.get(url).json()
        seen += [row["rank"] for row in page["results"]]
        url = page["next"]
    assert seen == list(range(1, 131))
    first = client.get(f"/api/searches/{search.pk}/results/?size=1").json()
    photo = world["photos"][0]
    assert first["count"] == 130
    assert first["results"] == [{
        "rank": 1, "asset_id": photo.pk, "library_id": world["harbour"].pk, "score": 1.0, "text_score": 0.5,
        "image_score": 0.5, "thumbnail_url": f"http://testserver/photos/{photo.pk}/thumb",
        "photo_url": f"http://testserver/photos/{photo.pk}/file",
    }]


def test_another_users_search_and_results_do_not_exist_for_you(world, client):
    search = _done_search(world)
    bob = api(world["bob"])
    assert bob.get(f"/api/searches/{search.pk}/").status_code == 404
    assert bob.get(f"/api/searches/{search.pk}/results/").status_code == 404
    assert bob.post(f"/api/searches/{search.pk}/refine/", {}, format="json").status_code == 404
    assert bob.get("/api/searches/").json()["count"] == 0
    client.force_login(world["bob"])
    assert client.get(f"/search/{search.pk}/").status_code == 404
    assert client.get(f"/search/{search.pk}/proxies/0").status_code == 404


def test_refine_makes_a_child_search_and_validates(world, queued, django_capture_on_commit_callbacks):
    parent = _done_search(world, n=5)
    parent.libraries.set([world["harbour"]])
    client = api(world["ann"])
    bad = client.post(f"/api/searches/{parent.pk}/refine/", {"disabled_proxies": [4]}, format="json")
    assert bad.status_code == 400 and bad.json() == {"disabled_proxies": ["Proxy numbers run from 0 to 3."]}
    foreign = client.post(f"/api/searches/{parent.pk}/refine/", {"negative_assets": [world["bob_photo"].pk]}, format="json")
    assert foreign.status_code == 400
    assert foreign.json() == {"negative_assets": [f"No such photo: {world['bob_photo'].pk}."]}
    with django_capture_on_commit_callbacks(execute=True):
        ok = client.post(f"/api/searches/{parent.pk}/refine/", {
            "disabled_proxies": [1, 1, 3], "positive_assets": [world["photos"][9].pk], "negative_text": "toy boat",
        }, format="json")
    assert ok.status_code == 202
    child = Search.objects.get(parent=parent)
    assert ok.json()["parent"] == parent.pk and ok.json()["disabled_proxies"] == [1, 3]
    assert list(child.libraries.all()) == [world["harbour"]] and child.negative_text == "toy boat"
    assert list(child.positive_assets.all()) == [world["photos"][9]]
    assert queued == [child.pk]


def test_search_pages(world, queued, client):
    client.force_login(world["ann"])
    assert client.get("/search/").status_code == 200
    response = client.post("/search/", {"text": "sailboat", "libraries": [world["harbour"].pk], "k": "", "seed": "3"})
    search = Search.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/search/{search.pk}/"
    assert (search.text, search.seed, search.k) == ("sailboat", 3, 4)
    empty = client.post("/search/", {"text": "   "})
    assert empty.status_code == 400 and "Type what to search for" in empty.content.decode()
    done = _done_search(world)
    page = client.get(f"/search/{done.pk}/?size=24").content.decode()
    assert page.count('class="result"') == 24 and "Page 1 of 6" in page


def test_a_search_that_cannot_be_queued_fails_with_the_reason(world, monkeypatch, django_capture_on_commit_callbacks):
    from retrieval.search import tasks as search_tasks

    def broker_down(search_id):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(search_tasks.run_search, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        api(world["ann"]).post("/api/searches/", {"text": "boat"}, format="json")
    search = Search.objects.get()
    assert search.status == "failed"
    assert search.error == "The search could not be queued (is the broker running?): [Errno 111] Connection refused"


def _jpeg(name: str, shade: int = 90):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 120, 200)).save(buffer, "JPEG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def _refined(world, parent, media_root, **changes) -> Search:
    """A child of `parent` made with +photo 4, −photo 25 and one uploaded example."""
    from retrieval.models import SearchExample

    child = Search.objects.create(user=world["ann"], text=parent.text, k=4, status=Search.Status.DONE, parent=parent,
                                  negative_text="toy boat", **changes)
    child.positive_assets.set([world["photos"][4]])
    child.negative_assets.set([world["photos"][25]])
    SearchExample.objects.create(search=child, kind=SearchExample.Kind.POSITIVE, file=_jpeg("mine.jpg"))
    return child


def test_a_refinement_starts_from_everything_the_search_had(world, queued, media_root):
    first = _done_search(world, n=30)
    second = _refined(world, first, media_root, disabled_proxies=[2])
    client = api(world["ann"])
    photos = world["photos"]

    kept = client.post(f"/api/searches/{second.pk}/refine/", {"negative_text": "dinghy"}, format="json").json()
    assert (kept["positive_assets"], kept["negative_assets"], kept["disabled_proxies"], kept["negative_text"]) == (
        [photos[4].pk], [photos[25].pk], [2], "dinghy")
    third = Search.objects.get(pk=kept["id"])
    assert [e.kind for e in third.examples.all()] == ["positive"]
    assert third.examples.get().file.name != second.examples.get().file.name  # its own copy

    added = client.post(f"/api/searches/{second.pk}/refine/", {"positive_assets": [photos[4].pk, photos[9].pk]},
                        format="json").json()
    assert added["positive_assets"] == [photos[4].pk, photos[9].pk] and added["negative_assets"] == [photos[25].pk]
    cleared = client.post(f"/api/searches/{second.pk}/refine/", {"negative_assets": [], "kept_examples": []},
                          format="json").json()
    assert cleared["negative_assets"] == [] and not Search.objects.get(pk=cleared["id"]).examples.exists()
    unknown = client.post(f"/api/searches/{second.pk}/refine/", {"kept_examples": [999999]}, format="json")
    assert unknown.status_code == 400 and unknown.json() == {"kept_examples": ["No such example of this search: 999999."]}


def test_the_refine_form_keeps_the_earlier_examples_and_reports_every_bad_upload(world, queued, media_root, client):
    first = _done_search(world, n=30)
    second = _refined(world, first, media_root)
    example = second.examples.get()
    photos = world["photos"]
    client.force_login(world["ann"])
    page = client.get(f"/search/{second.pk}/").content.decode()
    for name, value in (("positive_assets", photos[4].pk), ("negative_assets", photos[25].pk),
                        ("kept_examples", example.pk)):
        assert f'name="{name}" value="{value}" checked' in page, name
    assert f"/search/{second.pk}/examples/{example.pk}" in page  # the uploaded example shows as a thumbnail

    # The form as a browser sends it: the earlier examples' boxes still ticked, one new upload.
    response = client.post(f"/search/{second.pk}/refine", {
        "examples_shown": "1", "positive_assets": [photos[4].pk], "negative_assets": [photos[25].pk],
        "kept_examples": [example.pk], "negative_text": "toy boat", "positive_uploads": [_jpeg("new.jpg", 30)],
    })
    third = Search.objects.get(parent=second)
    assert response.status_code == 302 and response["Location"] == f"/search/{third.pk}/"
    assert list(third.positive_assets.all()) == [photos[4]] and list(third.negative_assets.all()) == [photos[25]]
    assert third.examples.filter(kind="positive").count() == 2

    # Unticking drops: nothing of the lists comes back.
    client.post(f"/search/{second.pk}/refine", {"examples_shown": "1", "negative_text": ""})
    fourth = Search.objects.filter(parent=second).latest("pk")
    assert not fourth.positive_assets.exists() and not fourth.negative_assets.exists() and not fourth.examples.exists()

    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = [SimpleUploadedFile("notes.txt", b"not a photo"), SimpleUploadedFile("broken.jpg", b"\xff\xd8\xff\xe0 junk")]
    response = client.post(f"/search/{second.pk}/refine", {"positive_uploads": bad}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and "notes.txt" in shown[0] and "broken.jpg" in shown[0], shown
    assert Search.objects.filter(parent=second).count() == 2
