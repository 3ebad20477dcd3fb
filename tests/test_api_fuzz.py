"""Schemathesis against /api/schema/: generated requests of an authenticated user over every API
operation answer without a server error and exactly as the schema documents them.

Requests go through Django's WSGI application in this process (no server), against the test
database holding a user's library with photos, an index, and searches in every state; another
user's library makes some generated ids belong to someone else. Every operation is fuzzed and
every failure is collected, so one run reports all of them with the request, the response and
the server's traceback.
"""
from __future__ import annotations

import math
import traceback

import numpy as np
import pytest
import schemathesis
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from assets.models import Library
from retrieval.models import EmbeddingSpace, ProxyImage, ProxySet, Search
from tests.stored_results import store_ranked
from tests.photos import write_photos

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

MIN_REQUESTS = 1000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def in_process_requests():
    """Keep Django from closing the test's connection (and its transaction) after each request,
    as its own test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def server_errors():
    """Tracebacks of exceptions the views raised, in order (Django turns them into a 500)."""
    errors: list[str] = []

    def record(sender, request=None, **kwargs):
        errors.append(f"{request.method} {request.get_full_path()}\n{traceback.format_exc()}")

    got_request_exception.connect(record, weak=False, dispatch_uid="api-fuzz")
    yield errors
    got_request_exception.disconnect(dispatch_uid="api-fuzz")


@pytest.fixture
def world(make_user, media_root) -> dict:
    """Ann's API token, and the ids that exist: her library, index and searches in every state,
    and Bob's library, photos and search beside them (which Ann must not reach)."""
    ann, bob = make_user("ann"), make_user("bob")
    harbour, secret = Library.objects.create(name="Harbour", owner=ann), Library.objects.create(name="Bob's", owner=bob)
    photos = write_photos(media_root, harbour, 30)
    bobs_photos = write_photos(media_root, secret, 3, start=100)
    space = EmbeddingSpace.objects.create(
        name="tiny", profile="tiny", vlm_model="v", vision_model="d", generator_model="g", vlm_dim=2, vision_dim=2,
        fingerprint="f" * 64, is_active=True, is_serving=True,
    )
    for photo in photos[:20]:
        photo.embeddings.create(space=space, vector=[0.5, 0.5, 0.5, 0.5])
    proxies = ProxySet.objects.create(query="sailboat", space=space, generator_key="g", seeds=[0, 1], seeds_key="0,1",
                                      prompt="a photo of a sailboat", features=np.zeros((2, 2), np.float32).tobytes())
    for index in range(2):
        ProxyImage.objects.create(proxy_set=proxies, index=index, seed=index, file=f"proxies/{proxies.pk}/{index}.webp")
    done = Search.objects.create(user=ann, text="sailboat", k=2, status=Search.Status.DONE, space=space, proxy_set=proxies,
                                 result_count=20, lambda_used=0.5, aggregation="mean", timings={"total": 0.1})
    store_ranked(done, [(photo, 1 - rank / 100, 0.5, 0.5) for rank, photo in enumerate(photos[:20], 1)])
    searches = [
        done,
        Search.objects.create(user=ann, text="harbour", k=2, status=Search.Status.FAILED, error="Ranking failed: x"),
        Search.objects.create(user=ann, text="lighthouse", k=2),
        Search.objects.create(user=bob, text="secret", k=2, status=Search.Status.DONE),
    ]
    return {
        "token": Token.objects.create(user=ann).key,
        "/api/libraries/": [harbour.pk, secret.pk],
        "/api/assets/": [photos[0].pk, photos[25].pk, bobs_photos[0].pk],
        "/api/searches/": [s.pk for s in searches],
    }


def with_existing_ids(strategy, world: dict, path: str):
    """Cases whose `{id}` is, half the time, one that exists (Ann's or Bob's): random integers
    alone would almost never reach a real object."""
    known = next((ids for prefix, ids in world.items() if path.startswith(prefix + "{id}")), None)
    if not known:
        return strategy

    def use(pair):
        case, existing = pair
        if existing is not None and "id" in case.path_parameters:
            case.path_parameters["id"] = existing
        return case

    return st.tuples(strategy, st.sampled_from([None, *known])).map(use)


def test_generated_api_requests_get_no_server_error_and_match_the_schema(world, in_process_requests, server_errors):
    from cletir_site.wsgi import application

    auth = {"Authorization": f"Token {world['token']}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application, headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Some operations have few distinct inputs and end early: aim past the minimum.
    per_operation = math.ceil(1.5 * MIN_REQUESTS / len(operations))
    sent = 0
    failures: list[str] = []

    for operation in operations:
        @given(case=with_existing_ids(operation.as_strategy(), world, operation.path))
        @settings(max_examples=per_operation, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
        def fuzz(case):
            nonlocal sent
            sent += 1
            errors_before = len(server_errors)
            # Each request's writes are rolled back: every case meets the same world (a generated
            # DELETE of Ann's library must not empty it for the operations after it).
            with transaction.atomic():
                try:
                    case.call_and_validate(headers=auth, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
                    for server_traceback in server_errors[errors_before:]:
                        exc.add_note(f"Server traceback of {server_traceback}")
                    raise
                finally:
                    transaction.set_rollback(True)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # collected: one run reports every failing operation
            failures.append(f"=== {operation.label}\n" + "".join(traceback.format_exception_only(exc)))

    assert not failures, (f"{len(failures)} of {len(operations)} operations failed ({sent} requests):\n\n"
                          + "\n\n".join(failures))
    assert sent >= MIN_REQUESTS
