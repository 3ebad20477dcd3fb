"""Stored search results for tests that need a finished search without running one."""
from __future__ import annotations

from django.db import transaction

from retrieval.search.ranking import RankedRow
from retrieval.search.results import store_results


def store_ranked(search, rows: list[tuple]) -> None:
    """Store `rows` — (asset or asset id, score, text score, image score), best first — as the
    search's results, as a finished search leaves them."""
    with transaction.atomic():
        store_results(search, [RankedRow(asset_id=getattr(asset, "pk", asset), score=score, text_score=text,
                                         image_score=image) for asset, score, text, image in rows])
