"""The proxy cache: generated images of a query and their vision features, made once.

A `ProxySet` is identified by everything that determines its images and features: the
normalised query text, the embedding space (its vision encoder made the features), the
generator (`generator_key`: a hash of its ids, weights fingerprint, prompt, size, steps, dtype)
and the seeds. A repeated category query finds its set and generates nothing; two workers that
generate the same set at the same moment both finish, and the unique constraint on that key
decides whose rows stay (the loser returns the winner's).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import MutableMapping

import numpy as np
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image

from ..indexing.spaces import encoders_for
from ..models import EmbeddingSpace, ProxyImage, ProxySet
from .query import normalise_query

# Proxy images are shown in a strip and in the admin, never re-encoded: a good-quality lossy
# WebP is a tenth of a PNG and looks the same at that size.
WEBP_QUALITY = 90


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
    generator call for all K seeds; the images are embedded with the space's vision encoder and
    stored as WebP under MEDIA_ROOT. `timings`, when given, receives seconds for
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
    images = generator.generate(query, list(seeds))
    timings["generation"] = generation = time.perf_counter() - started
    started = time.perf_counter()
    features = encoders.encode_vision_images(images)
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
            for index, (seed, image) in enumerate(zip(seeds, images)):
                row = ProxyImage(proxy_set=proxy_set, index=index, seed=int(seed))
                row.file.save(f"{index}.webp", _webp(image), save=False)
                row.save()
    except IntegrityError:
        # A concurrent search generated the same set and committed first: use theirs.
        winner = _lookup(space, query, key, seeds_text)
        if winner is None:
            raise
        return winner, True
    return proxy_set, True
