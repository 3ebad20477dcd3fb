"""Running one search: text vector, proxies, aggregation, fusion, one ranking query, results.

`execute(search)` is the body of the `search` queue's task. It saves the search's state and
progress as it goes (generating -> ranking -> done) and the seconds of each stage in
`Search.timings`, so the page can show what is happening and what it cost.

How the query vector is made (METHOD.md, steps 1-5), per mode:

* text search: t = T(text) over the 80 CLIP templates; the cached or generated proxies g_k
  (a refinement reuses its parent's set); q = the space's trained aggregator over the active
  proxies, else their mean; λ = the search's override, else the trained λ, else
  CLETIR_FUSION_LAMBDA.
* text only: λ = 0, nothing generated; example photos and negatives are ignored (they act on the
  image half, which λ = 0 switches off).
* by example (no text): q from the example photos alone, λ = 1, no text branch.
* refining: switched-off proxies are masked out of the aggregation; positive example photos (from
  the libraries: their stored V(x); uploaded: encoded now) join the proxies as extra tokens;
  negatives (photos, uploads, and the proxies generated from a "not ..." text) are averaged into
  n and the image query becomes q' = normalize(q - β n), β = CLETIR_NEGATIVE_WEIGHT.

  Why subtract instead of a second query: <q', V(x)> = (<q, V(x)> - β<n, V(x)>) / |q - βn|
  pushes every photo down in proportion to its similarity to the negatives, and the ranking stays
  ONE inner-product query on the HNSW index. Re-normalising keeps q' a unit vector, so λ keeps
  its meaning (the balance of the text and image halves).

Only libraries the search's user may see are ranked, whatever the search row says.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from assets.models import Asset
from assets.permissions import libraries_visible_to

from . import binary_copy
from .models import AssetEmbedding, EmbeddingSpace, ProxySet, Search, SearchExample, SearchResult
from .proxies import get_or_generate_proxy_set, normalise_query, proxy_features, proxy_seeds
from .ranking import rank
from .spaces import encoders_for, serving_space

logger = logging.getLogger(__name__)

# Text vectors of recent queries per worker process: the 80-template text encoding is the one
# model call a search with cached proxies still needs, and it is a pure function of
# (space, text), so a repeated query skips it.
TEXT_CACHE_SIZE = 1024


class SearchFailed(Exception):
    """A search that cannot run; the message is shown to the user as it is."""


# Errors worth retrying the whole task for: the database went away for a moment.
TRANSIENT_ERRORS = (OperationalError,)

# What the user reads when a stage fails: "<phase> failed: <error>".
PHASES = {
    "preparing": "Preparing the search",
    "text": "Encoding the text",
    "proxies": "Generating the proxy images",
    "examples": "Reading the example photos",
    "negatives": "Reading the negative examples",
    "aggregation": "Aggregating the proxies",
    "ranking": "Ranking the photos",
    "matches": "Counting the matching photos",
    "store": "Storing the results",
}


# ---------------------------------------------------------------------------- scope


def search_library_ids(search: Search) -> list[int]:
    """The libraries a search ranks: its chosen ones the user may see (all they may see when
    none were chosen). A library the user cannot see is never included, even when chosen."""
    visible = set(libraries_visible_to(search.user).values_list("pk", flat=True))
    chosen = set(search.libraries.values_list("pk", flat=True))
    return sorted(visible & chosen if chosen else visible)


# ---------------------------------------------------------------------------- cached models


class _TextVectors:
    """A small LRU of text vectors keyed by (space fingerprint, normalised text)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, space: EmbeddingSpace, text: str) -> tuple[np.ndarray, bool]:
        key = (space.fingerprint, text)
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
    from .engine.aggregator import load_aggregator

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


# ---------------------------------------------------------------------------- example photos


def _asset_vision_vectors(space: EmbeddingSpace, assets: list[Asset]) -> list[np.ndarray]:
    """V(x) of library photos: the vision half of their stored vector e = [I(x); V(x)], or
    encoded now when the photo has no vector in this space yet."""
    if not assets:
        return []
    stored = dict(AssetEmbedding.objects.filter(space=space, asset__in=assets).values_list("asset_id", "vector"))
    missing = [a for a in assets if a.pk not in stored]
    encoded = dict(zip((a.pk for a in missing), _encode_files(space, [a.file.path for a in missing])))
    return [
        np.asarray(stored[a.pk], dtype=np.float32)[space.vlm_dim:] if a.pk in stored else encoded[a.pk]
        for a in assets
    ]


def _encode_files(space: EmbeddingSpace, paths: list[str]) -> list[np.ndarray]:
    if not paths:
        return []
    from .indexing import load_photo_for_embedding

    images = [load_photo_for_embedding(path) for path in paths]
    return list(encoders_for(space).encode_vision_images(images))


def _normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / max(norm, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------- the run


# Progress is written at most this often (seconds). A search with cached proxies passes its
# progress steps within ~2 ms, and a write per step would cost it a round trip and a commit each;
# a slow stage (generation, encoding, ranking a large scope) still shows every step.
PROGRESS_INTERVAL = 0.1


class _Run:
    """State, progress and timings of one execution, saved on the Search row as they change."""

    def __init__(self, search: Search) -> None:
        self.search = search
        self.timings: dict[str, float | bool] = {}
        self.started = time.perf_counter()
        self.phase = "preparing"
        self._held: dict = {}
        self._saved_at = time.perf_counter()

    def save(self, **fields) -> None:
        """Write `fields` (and any progress held back) now: state changes and results."""
        fields = {**self._held, **fields}
        self._held.clear()
        for name, value in fields.items():
            setattr(self.search, name, value)
        Search.objects.filter(pk=self.search.pk).update(**fields)
        self._saved_at = time.perf_counter()

    def progress(self, value: int, **fields) -> None:
        """Progress, and fields only the page shows (the proxy set): written now when the last
        write is older than PROGRESS_INTERVAL, else held for the next write."""
        self._held.update(fields, progress=value)
        if time.perf_counter() - self._saved_at >= PROGRESS_INTERVAL:
            self.save()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (seconds added to timings[name]) and name it for error messages."""
        self.phase = name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start)


def execute(search: Search) -> None:
    """Run `search` to the end: results stored and status DONE, or an exception raised (the
    task marks the search FAILED). A search already DONE returns at once; a re-run of one that
    stopped half-way starts over (its partial state is discarded)."""
    search.refresh_from_db(from_queryset=Search.objects.select_related("user"))  # the user decides the scope
    if search.status == Search.Status.DONE:
        return
    run = _Run(search)
    try:
        _execute(run)
    except (SearchFailed, *TRANSIENT_ERRORS):
        raise
    except Exception as exc:
        raise SearchFailed(f"{PHASES[run.phase]} failed: {type(exc).__name__}: {exc}") from exc


def _execute(run: _Run) -> None:
    search = run.search
    space = serving_space()
    if space is None:
        raise SearchFailed("No photo index is ready for search yet: an administrator must activate a model "
                           "profile (manage.py activate_profile) and let the libraries be indexed.")
    library_ids = search_library_ids(search)
    run.save(status=Search.Status.GENERATING, progress=5, error="", space=space, proxy_set=None,
             negative_proxy_set=None, started_at=timezone.now(), finished_at=None)

    text = normalise_query(search.text)
    image_branch = not search.text_only
    positive_assets = list(_visible(search.positive_assets.all(), search)) if image_branch else []
    uploads = list(search.examples.all()) if image_branch else []
    positive_uploads = [e.file.path for e in uploads if e.kind == SearchExample.Kind.POSITIVE]
    negative_uploads = [e.file.path for e in uploads if e.kind == SearchExample.Kind.NEGATIVE]
    if search.text_only and not text:
        raise SearchFailed("A text-only search needs a text.")
    if not text and not (positive_assets or positive_uploads):
        raise SearchFailed("A search needs a text or at least one example photo.")

    t = np.zeros(space.vlm_dim, dtype=np.float32)
    if text:
        with run.stage("text"):
            t, cached = text_vectors.get(space, text)
        run.timings["text_cached"] = cached
    run.progress(15)

    # Positive tokens for the aggregation: the proxies (masked when switched off) + examples.
    tokens: list[np.ndarray] = []
    active: list[bool] = []
    proxy_set = None
    if text and image_branch:
        run.phase = "proxies"
        proxy_set = _proxies(run, space, text)
        run.progress(55, proxy_set=proxy_set)
        features = proxy_features(proxy_set)
        disabled = set(search.disabled_proxies)
        tokens.extend(features)
        active.extend(i not in disabled for i in range(len(features)))
    if positive_assets or positive_uploads:
        with run.stage("examples"):
            examples = _asset_vision_vectors(space, positive_assets) + _encode_files(space, positive_uploads)
        tokens.extend(examples)
        active.extend([True] * len(examples))

    negatives = _negative_vectors(run, space, search, negative_uploads) if image_branch else []
    run.progress(65)

    q = np.zeros(space.vision_dim, dtype=np.float32)
    aggregation = "none"
    net = None
    if any(active):
        from .engine.aggregator import aggregate

        with run.stage("aggregation"):
            net = space_aggregator(space)
            q = aggregate(np.stack(tokens), net, np.array(active))
            if negatives:
                n = _normalised(np.mean(np.stack(negatives), axis=0))
                q = _normalised(q - settings.CLETIR_NEGATIVE_WEIGHT * n)
        aggregation = "trained" if net is not None else "mean"
    lam = _fusion_lambda(search, has_text=bool(text), has_images=aggregation != "none", net=net)

    from .engine.fusion import query_vector

    u = query_vector(t, q, lam)
    run.save(status=Search.Status.RANKING, progress=75)
    with run.stage("ranking"):
        rows = rank(space, u, library_ids, search.top_n)

    run.phase = "store"
    started = time.perf_counter()
    with transaction.atomic():
        # The row lock makes a duplicate delivery running at the same time store nothing twice.
        if Search.objects.select_for_update().values_list("status", flat=True).get(pk=search.pk) == Search.Status.DONE:
            return
        SearchResult.objects.filter(search=search).delete()  # an unfinished run's, if any
        _store_results(search, rows)
        run.save(status=Search.Status.DONE, progress=100, result_count=len(rows), lambda_used=lam,
                 aggregation=aggregation, timings=_rounded(run.timings), finished_at=timezone.now())
    # Measured after the commit: what the worker spent before the results could be read.
    # Written with the match count below.
    run.timings["store"] = time.perf_counter() - started
    run.timings["total"] = time.perf_counter() - run.started

    # After DONE: counting the matches scores every photo in scope (hundreds of ms at 100k
    # photos), which must not delay the ranked results; the page waits for the count.
    started = time.perf_counter()
    try:
        from .matches import record_matches

        record_matches(search, space, u, library_ids, rows, [g for g, on in zip(tokens, active) if on])
        run.timings["matches"] = time.perf_counter() - started
    except Exception:  # the count is an estimate on top of finished results: log, keep the results
        logger.exception("could not count the matching photos of search %s", search.pk)
    Search.objects.filter(pk=search.pk).update(timings=_rounded(run.timings))


RESULT_COLUMNS = "search_id, asset_id, rank, score, text_score, image_score"
_RESULT_ROW = binary_copy.row_type([
    ("search", ">i8"), ("asset", ">i8"), ("rank", ">i4"), ("score", ">f8"), ("text", ">f8"), ("image", ">f8"),
])


def _store_results(search: Search, rows: list) -> None:
    """Write the ranked rows with one binary COPY built by numpy: for 1000 rows ~2 ms, where
    bulk_create's INSERT takes ~20 ms and a row-by-row text COPY ~6 ms on a small CPU."""
    table = SearchResult._meta.db_table
    data = binary_copy.new_rows(_RESULT_ROW, len(rows))
    data["search"] = search.pk
    data["asset"] = [row.asset_id for row in rows]
    data["rank"] = np.arange(1, len(rows) + 1)
    data["score"] = [row.score for row in rows]
    data["text"] = [row.text_score for row in rows]
    data["image"] = [row.image_score for row in rows]
    sql = f'COPY "{table}" ({RESULT_COLUMNS}) FROM STDIN WITH (FORMAT binary)'
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        copy.write(binary_copy.HEADER + data.tobytes() + binary_copy.TRAILER)


def _visible(assets, search: Search):
    """Example photos from libraries the user may see (others are ignored, never read)."""
    return assets.filter(library__in=libraries_visible_to(search.user)).order_by("pk")


def _proxies(run: _Run, space: EmbeddingSpace, text: str) -> ProxySet:
    """The search's proxy set: its parent's when refining (no generation, no lookup), else
    the cached set of (text, space, generator, seeds), generated when missing."""
    search = run.search
    parent = search.parent
    inherited = parent.proxy_set if parent is not None else None
    if inherited is not None and inherited.space_id == space.pk and inherited.query == text:
        run.timings.update(proxies_lookup=0.0, generation=0.0, proxies_cached=True)
        return inherited
    stage_timings: dict[str, float] = {}
    proxy_set, generated = get_or_generate_proxy_set(space, text, proxy_seeds(search.seed, search.k), stage_timings)
    run.timings.update(stage_timings)
    run.timings.setdefault("generation", 0.0)
    run.timings["proxies_cached"] = not generated
    return proxy_set


def _negative_vectors(run: _Run, space: EmbeddingSpace, search: Search, uploads: list[str]) -> list[np.ndarray]:
    """Vision vectors of everything the user marked as "not this"."""
    negative_assets = list(_visible(search.negative_assets.all(), search))
    negative_text = normalise_query(search.negative_text)
    if not (negative_assets or uploads or negative_text):
        return []
    vectors: list[np.ndarray] = []
    with run.stage("negatives"):
        vectors += _asset_vision_vectors(space, negative_assets) + _encode_files(space, uploads)
        if negative_text:
            negative_set, _ = get_or_generate_proxy_set(space, negative_text, proxy_seeds(search.seed, search.k))
            run.save(negative_proxy_set=negative_set)
            vectors += list(proxy_features(negative_set))
    return vectors


def _fusion_lambda(search: Search, has_text: bool, has_images: bool, net) -> float:
    if not has_images:
        return 0.0  # text only, or every proxy switched off with no example photo
    if not has_text:
        return 1.0  # by example: there is no text branch
    if search.lambda_override is not None:
        return float(search.lambda_override)
    from .engine.aggregator import fusion_lambda

    return fusion_lambda(net, default=settings.CLETIR_FUSION_LAMBDA)


def _rounded(timings: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in timings.items()}


def mark_failed(search_id: int, error: str) -> None:
    """Record a search as FAILED with a readable reason (never left "running")."""
    Search.objects.filter(pk=search_id).exclude(status=Search.Status.DONE).update(
        status=Search.Status.FAILED, error=error[:2000], finished_at=timezone.now()
    )

