"""Small distinct JPEG photos stored in a library, for tests that need real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(media_root: Path, library, count: int, start: int = 0) -> list:
    """`count` small distinct JPEGs stored as ready photos of `library` (numbered from `start`)."""
    from assets.models import Asset

    assets = []
    for index in range(start, start + count):
        relative = f"libraries/{library.pk}/{index:04d}.jpg"
        path = Path(media_root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(index).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, "JPEG")
        assets.append(Asset.objects.create(library=library, file=relative, sha256=f"{index:064x}",
                                           status=Asset.Status.READY, width=64, height=48, format="JPEG"))
    return assets
