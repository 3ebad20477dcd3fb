"""Fixtures shared by the retrieval tests: a user and her library."""
import pytest

from assets.models import Library


@pytest.fixture
def ann(make_user):
    return make_user("ann")


@pytest.fixture
def library(ann):
    return Library.objects.create(name="Harbour", owner=ann)
