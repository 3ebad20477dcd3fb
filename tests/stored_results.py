"""Stored search results for tests that need a finished search without running one."""
from __future__ import annotations

import numpy as np
from django.db import transaction

from retrieval.search.results import store_results


def store_ranked(search, rows: list[tuple]) -> None:
    """Store `rows` — (asset or asset id, score, text score, image score), best first — as the
    search's results, as a finished search leaves them."""
    asset_ids = np.array([getattr(asset, "pk", asset) for asset, *_ in rows], dtype=np.int64)
    columns = np.array([scores for _, *scores in rows], dtype=np.float32).reshape(len(rows), 3).T
    with transaction.atomic():
        store_results(search, asset_ids, *columns)
