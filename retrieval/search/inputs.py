"""What a search worker reads to make a query plan: text vectors (cached per process), the
space's trained aggregator (loaded once per file version) and the vision vectors of example
photos (stored, or encoded now)."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from assets.models import Asset

from ..indexing.photos import decode_for_embedding
from ..indexing.spaces import encoders_for
from ..models import AssetEmbedding, EmbeddingSpace

logger = logging.getLogger(__name__)

# Text vectors of recent queries per worker process: the 80-template text encoding is the one
# model call a search with cached proxies still needs, and it is a pure function of
# (space, text), so a repeated query skips it. Keyed by user too: a hit must never tell a user
# that someone else searched the text (cache_privacy).
TEXT_CACHE_SIZE = 1024


class _TextVectors:
    """A small LRU of text vectors keyed by (space fingerprint, user, normalised text)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int | None, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, space: EmbeddingSpace, text: str, user_id: int | None) -> tuple[np.ndarray, bool]:
        key = (space.fingerprint, user_id, text)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], True
        vector = encoders_for(space).encode_text([text])[0]
        with self._lock:
            self._items[key] = vector
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return vector, False

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


text_vectors = _TextVectors(TEXT_CACHE_SIZE)

_aggregators: dict[tuple[str, int, int], object] = {}
_aggregators_lock = threading.Lock()


def space_aggregator(space: EmbeddingSpace):
    """The space's trained aggregation network (loaded once per process and file version),
    or None: no file, or a network trained for another vision encoder (then the mean is the
    only correct aggregation, see `retrieval.engine.aggregator`)."""
    if not space.aggregator_file:
        return None
    # Imported where used: the network module loads torch, which the web process never needs.
    from retrieval.engine.aggregator import load_aggregator

    path = Path(space.aggregator_file.path)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)  # a replaced file is loaded again
    with _aggregators_lock:
        if key not in _aggregators:
            _aggregators[key] = load_aggregator(path)
        net = _aggregators[key]
    trained_for = net.config.vision_model
    if net.dim != space.vision_dim or (trained_for and trained_for != space.vision_model):
        logger.warning("aggregator %s was trained for %s (dim %d), not %s (dim %d): using the mean",
                       path, trained_for or "?", net.dim, space.vision_model, space.vision_dim)
        return None
    if space.aggregator_architecture and net.config.architecture != space.aggregator_architecture:
        logger.warning("aggregator %s holds a %s network, the space records %s: using the mean",
                       path, net.config.architecture, space.aggregator_architecture)
        return None
    return net


def asset_vision_vectors(space: EmbeddingSpace, assets: list[Asset]) -> list[np.ndarray]:
    """V(x) of library photos: the vision half of their stored vector e = [I(x); V(x)], or
    encoded now when the photo has no vector in this space yet."""
    if not assets:
        return []
    stored = dict(AssetEmbedding.objects.filter(space=space, asset__in=assets).values_list("asset_id", "vector"))
    missing = [a for a in assets if a.pk not in stored]
    encoded = dict(zip((a.pk for a in missing), encode_files(space, [a.file.path for a in missing])))
    return [
        np.asarray(stored[a.pk], dtype=np.float32)[space.vlm_dim:] if a.pk in stored else encoded[a.pk]
        for a in assets
    ]


def encode_files(space: EmbeddingSpace, paths: list[str]) -> list[np.ndarray]:
    """V(x) of photo files (uploaded examples, photos not indexed yet)."""
    if not paths:
        return []
    images = [decode_for_embedding(path) for path in paths]
    return list(encoders_for(space).encode_vision_images(images))
