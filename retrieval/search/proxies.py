"""The proxy cache: generated images of a query and their vision features, made once.

A `ProxySet` is identified by everything that determines its images and features: the
normalised query text, the embedding space (its vision encoder made the features), the
generator (`generator_key`: a hash of its ids, weights fingerprint, prompt, size, steps, dtype)
and the seeds. A repeated category query finds its set and generates nothing; two workers that
generate the same set at the same moment both finish, and the unique constraint on that key
decides whose rows stay (the loser returns the winner's).

The images stay on the device: the decoder's output goes to the vision encoder as a tensor
(`Encoders.encode_vision_tensors`, no Pillow round trip), and the set is stored with its
features and one `ProxyImage` row per seed whose file is still empty. The files are written
after the ranking, off the path to the results (`write_proxy_images`, which the runner calls
once the results are stored, and the search task once more whatever happened); until then the
pages show a placeholder and the API gives `image_url: null`. A set whose files were never
written (the worker died in between) gets them the next time a search uses it: the images are
made again from the same seeds, which give the same images.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

import numpy as np
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image

from ..indexing.spaces import encoders_for
from ..models import EmbeddingSpace, ProxyImage, ProxySet
from .query import normalise_query

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Proxy images are shown in a strip and in the admin, never re-encoded: a good-quality lossy
# WebP is a tenth of a PNG and looks the same at that size.
WEBP_QUALITY = 90

# Images generated in this process whose files are not written yet: proxy set id -> (K, 3, H, W)
# tensor on the generator's device (a search worker runs one search at a time; the lock guards
# a thread pool worker all the same).
_unwritten: dict[int, torch.Tensor] = {}
_unwritten_lock = threading.Lock()


def generator_key(versions: dict[str, str]) -> str:
    """sha256 of the generator's model_versions(): changes whenever the images would."""
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()


def seeds_key(seeds: list[int]) -> str:
    return ",".join(str(int(s)) for s in seeds)


def _features_bytes(features: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def proxy_features(proxy_set: ProxySet) -> np.ndarray:
    """The set's vision features g_1..g_K: (K, vision_dim) float32, rows unit-norm."""
    features = np.load(io.BytesIO(bytes(proxy_set.features)), allow_pickle=False)
    return np.asarray(features, dtype=np.float32)


def _webp(image: Image.Image) -> ContentFile:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "WEBP", quality=WEBP_QUALITY)
    return ContentFile(buffer.getvalue())


def _lookup(space: EmbeddingSpace, query: str, key: str, seeds: str) -> ProxySet | None:
    return ProxySet.objects.filter(query=query, space=space, generator_key=key, seeds_key=seeds).first()


def get_or_generate_proxy_set(
    space: EmbeddingSpace,
    query: str,
    seeds: list[int],
    timings: MutableMapping[str, float] | None = None,
) -> tuple[ProxySet, bool]:
    """The cached proxy set of `query` in `space` for `seeds`, generated when missing.

    Returns (proxy set, whether this call ran the generator). Generation is one batched
    generator call for all K seeds; the images are embedded with the space's vision encoder where
    the generator left them, and the set is stored with its features; the WebP files under
    MEDIA_ROOT follow in `write_proxy_images`. `timings`, when given, receives seconds for
    "proxies_lookup", and when generating, "generation" and "proxy_embedding".
    """
    # Imported where used: the generator module loads torch and diffusers, which the web
    # process (quota checks read this module's cache keys) never needs.
    from retrieval.engine.generator import load_generator

    query = normalise_query(query)
    if not query:
        raise ValueError("a proxy set needs a query text")
    if not seeds:
        raise ValueError("a proxy set needs at least one seed")
    timings = {} if timings is None else timings
    started = time.perf_counter()
    generator = load_generator(space.profile)  # loaded once per process
    versions = generator.model_versions()
    key, seeds_text = generator_key(versions), seeds_key(seeds)
    cached = _lookup(space, query, key, seeds_text)
    timings["proxies_lookup"] = time.perf_counter() - started
    if cached is not None:
        return cached, False

    encoders = encoders_for(space)  # refuses weights that did not make this space
    started = time.perf_counter()
    images = generator.generate_tensors(query, list(seeds))
    timings["generation"] = generation = time.perf_counter() - started
    started = time.perf_counter()
    features = encoders.encode_vision_tensors(images)
    timings["proxy_embedding"] = time.perf_counter() - started
    try:
        # A savepoint: the twin's unique-key violation must not poison a caller's transaction.
        with transaction.atomic():
            proxy_set = ProxySet.objects.create(
                query=query, space=space, generator_key=key, generator_versions=versions,
                seeds=[int(s) for s in seeds], seeds_key=seeds_text, prompt=generator.prompt(query),
                features=_features_bytes(features), generation_seconds=generation,
                embedding_seconds=timings["proxy_embedding"],
            )
            ProxyImage.objects.bulk_create(
                [ProxyImage(proxy_set=proxy_set, index=index, seed=int(seed)) for index, seed in enumerate(seeds)])
    except IntegrityError:
        # A concurrent search generated the same set and committed first: use theirs.
        winner = _lookup(space, query, key, seeds_text)
        if winner is None:
            raise
        return winner, True
    with _unwritten_lock:
        _unwritten[proxy_set.pk] = images
    return proxy_set, True


def write_proxy_images(*proxy_sets: ProxySet | None) -> None:
    """Write the image files of proxy sets that have none yet: those generated in this process
    from the images kept since, and those of `proxy_sets` (the sets a search used) made again
    from their seeds when no process kept them. Never raises: the images are only shown."""
    with _unwritten_lock:
        kept = dict(_unwritten)
        _unwritten.clear()
    wanted = {s.pk: s for s in proxy_sets if s is not None}
    for pk in sorted(set(kept) | set(wanted)):
        try:
            proxy_set = wanted.get(pk) or ProxySet.objects.filter(pk=pk).first()
            if proxy_set is not None:
                _write_missing_images(proxy_set, kept.get(pk))
        except Exception:
            logger.exception("could not write the images of proxy set %s", pk)


def _write_missing_images(proxy_set: ProxySet, images) -> None:
    from retrieval.engine.generator import load_generator
    from retrieval.engine.photo_preprocessing import tensors_to_images

    missing = list(proxy_set.images.filter(file=""))
    if not missing:
        return
    if images is None:
        generator = load_generator(proxy_set.space.profile)
        if generator_key(generator.model_versions()) != proxy_set.generator_key:
            return  # another generator made the set: its images cannot be made again here
        images = generator.generate_tensors(proxy_set.query, [int(s) for s in proxy_set.seeds])
    pictures = tensors_to_images(images)
    for row in missing:
        row.file.save(f"{row.index}.webp", _webp(pictures[row.index]), save=False)
        # Only where no other worker wrote one meanwhile; else ours is surplus.
        if not ProxyImage.objects.filter(pk=row.pk, file="").update(file=row.file.name):
            row.file.storage.delete(row.file.name)
