"""A database restart (what a restore also is) makes a worker's in-memory copy reload: the copy
cannot prove it is current across it (the server's start time is part of the feed's identity)."""
from __future__ import annotations

import json

import pytest

from tests.faults.conftest import run_django

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_restarted_database_makes_the_copy_reload(throwaway_database):  # noqa: F811
    server, env = throwaway_database
    out = run_django(env, "-c", "import django; django.setup(); from tests.faults.ranking_restart import "
                                f"restart_between_rankings; restart_between_rankings({server['HOST']!r})")
    assert json.loads(out.strip().splitlines()[-1]) == {"reloaded": True, "same": True}
