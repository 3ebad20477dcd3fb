"""`manage.py activate_profile --wait`: follows the re-index with a bar until search uses the new
space, and exits non-zero with the reason when indexing stalls or the space is replaced.

No worker runs here: the command's pause between polls is replaced by one indexing step (the
`embed` task's body, time-sliced to one batch), as a worker would take them meanwhile."""
from __future__ import annotations

import io
import re
from itertools import groupby

import pytest
from django.core.management import CommandError, call_command

from retrieval.indexing.tasks import index_space
from retrieval.management.commands import activate_profile
from retrieval.models import EmbeddingSpace
from tests.retrieval.indexing.test_indexing import write_photo

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def photos(tiny_model_dir, library, media_root, monkeypatch, settings):
    """Five photos and one that cannot be decoded; indexing one batch of two per step."""
    settings.CLETIR_INDEX_BATCH_SIZE, settings.CLETIR_INDEX_TASK_SECONDS = 2, 0
    monkeypatch.setattr(index_space, "delay", lambda space_id: None)  # no broker: steps are driven below
    monkeypatch.setattr(activate_profile, "POLL_SECONDS", 0.01)
    return [write_photo(media_root, library, i, corrupt=i == 5) for i in range(6)]


def run_wait(*flags, stderr=None) -> tuple[str, str]:
    out, err = io.StringIO(), stderr or io.StringIO()
    call_command("activate_profile", "tiny", "--wait", *flags, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_wait_follows_the_reindex_until_search_uses_the_space(photos, monkeypatch):
    def a_worker_step(seconds):
        index_space(EmbeddingSpace.objects.get(is_active=True).pk)

    monkeypatch.setattr(activate_profile.time, "sleep", a_worker_step)
    out, err = run_wait(stderr=Terminal())

    space = EmbeddingSpace.objects.get(is_active=True)
    assert space.is_serving and space.completed_at is not None
    assert out.splitlines()[-1] == f"search uses {space}: 5 photos indexed"
    drawn = [re.search(r"\| (\d)/6 \[", part) for part in err.split("\r")]
    # Redrawn at every poll; one batch of two photos per step, the last one failing.
    assert [done for done, _ in groupby(int(m.group(1)) for m in drawn if m)] == [0, 2, 4, 6]
    assert err.endswith("1 photos could not be indexed and are not searchable; the admin's photo list (index "
                        "status: failed) says why.\n")


def test_wait_gives_up_with_the_reason_when_nothing_indexes(photos, monkeypatch):
    with pytest.raises(CommandError) as stalled:
        run_wait("--stall-seconds", "0", "--no-progress")
    space = EmbeddingSpace.objects.get(is_active=True)
    assert str(stalled.value) == (
        f"indexing into {space} made no progress for 0 s (0 of 6 photos done): is an `embed` worker running? "
        "(manage.py check_services; its log says why batches fail). The space stays active; run this again to "
        "keep waiting.")


def test_wait_stops_when_another_profile_is_activated_meanwhile(photos, monkeypatch):
    monkeypatch.setattr(activate_profile.time, "sleep",
                        lambda seconds: EmbeddingSpace.objects.update(is_active=False))
    with pytest.raises(CommandError, match=r"^tiny \(\w+\) is no longer the active space: another profile was "
                                           "activated meanwhile"):
        run_wait()
