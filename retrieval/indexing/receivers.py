"""How indexing reacts to what `assets` announces."""
from __future__ import annotations

from .spaces import active_space
from .tasks import schedule_indexing


def queue_indexing_of_stored_photo(sender, asset_id: int, **kwargs) -> None:
    """A new photo: make sure an indexing run of the active space is queued (one run covers
    every photo pending at the time it works, so a 10,000-photo upload queues one task)."""
    schedule_indexing(active_space())
