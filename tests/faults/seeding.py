"""A library to index, made in a subprocess that works on another database (test_database_restart)."""
from __future__ import annotations

import json

from tests.photos import write_photos


def seed_indexable_library(count: int) -> None:
    """In a configured Django process: a user's library of `count` photos and the tiny space,
    active and serving, with no task queued (the test queues it). Prints their ids as JSON."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from assets.models import Library
    from retrieval.models import EmbeddingSpace
    from retrieval.indexing.spaces import space_for_profile

    user = get_user_model().objects.create_user(username="ann", password="pw-ann")
    library = Library.objects.create(name="Harbour", owner=user)
    assets = write_photos(settings.MEDIA_ROOT, library, count)
    space = space_for_profile("tiny")
    # Not activate_space(): that queues indexing through this process's broker settings.
    EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True, activated_at=timezone.now())
    print(json.dumps({"space": space.pk, "assets": [a.pk for a in assets]}))


def seed_outage_world(count: int, query: str) -> None:
    """In a configured Django process: `count` photos just uploaded (files stored, no thumbnails,
    no vectors), the tiny space active and serving, and a search for `query` made through the
    service but not queued (the test queues everything itself). Prints the ids as JSON."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from assets.models import Asset, Library
    from retrieval.indexing.spaces import space_for_profile
    from retrieval.models import EmbeddingSpace, Search

    user = get_user_model().objects.create_user(username="ann", password="pw-ann")
    library = Library.objects.create(name="Harbour", owner=user)
    assets = write_photos(settings.MEDIA_ROOT, library, count)
    Asset.objects.filter(library=library).update(status=Asset.Status.PENDING)  # waiting for thumbnails
    space = space_for_profile("tiny")
    EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True, activated_at=timezone.now())
    search = Search.objects.create(user=user, text=query, k=2, dispatched_at=timezone.now())
    search.libraries.set([library])
    print(json.dumps({"space": space.pk, "assets": [a.pk for a in assets], "search": search.pk}))
