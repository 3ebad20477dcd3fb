"""How smart albums react to what indexing announces."""
from __future__ import annotations

from .tasks import queue_album_scoring, queue_rederivation


def score_newly_indexed_photos(sender, space_id: int, asset_ids: list[int], **kwargs) -> None:
    queue_album_scoring(space_id, asset_ids)


def rederive_in_serving_space(sender, space_id: int, **kwargs) -> None:
    queue_rederivation(space_id)
