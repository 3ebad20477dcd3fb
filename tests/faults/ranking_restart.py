"""A worker process's in-memory copy across a database restart (run in a subprocess on a
throw-away server by test_ranking_copy_restart)."""
from __future__ import annotations

import json
from pathlib import Path


def restart_between_rankings(pgdata: str) -> None:
    """In a configured Django process: plant photos, rank them from memory, restart the server,
    rank again. Prints whether the copy was reloaded and whether both rankings matched."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import connection

    from assets.models import Asset, Library
    from cletir_site import embedded_postgres
    from retrieval.models import AssetEmbedding, EmbeddingSpace
    from retrieval.search.ranking import memory, rank

    user = get_user_model().objects.create_user(username="ann")
    library = Library.objects.create(name="Harbour", owner=user)
    space = EmbeddingSpace.objects.create(name="s", profile="tiny", vlm_model="v", vision_model="d", generator_model="g",
                                          vlm_dim=4, vision_dim=4, fingerprint="s")
    rng = np.random.default_rng(0)
    for i, vector in enumerate(rng.standard_normal((50, 8)).astype(np.float32)):
        asset = Asset.objects.create(library=library, file=f"x/{i}.jpg", sha256=f"{i:064x}", status="ready")
        AssetEmbedding.objects.create(asset=asset, space=space, vector=vector)
    u = rng.standard_normal(8).astype(np.float32)
    before = [r.asset_id for r in rank(space, u, [library.pk], 10, backend="memory").rows]
    copy = memory.loaded(space)

    connection.close()
    assert embedded_postgres.stop(Path(pgdata))
    embedded_postgres.ensure_running(Path(pgdata))
    after = [r.asset_id for r in rank(space, u, [library.pk], 10, backend="memory").rows]
    print(json.dumps({"reloaded": memory.loaded(space) is not copy, "same": before == after}))
