"""Running one search: scope, inputs, query plan, ranking, stored results, match count.

`execute(search)` is the body of the `search` queue's task: numbered steps, each timed into
`Search.timings` and named for the error message a failure shows ("<stage> failed: ..."). The
search's state moves through its own methods (`Search.mark_running`, `mark_ranking`,
`mark_done`; the task calls `mark_failed`), so the page can show what is happening and what it
cost. How the query vector is made is `plan.py`'s business; this module only gathers its inputs.

Only libraries the search's user may see when it runs are ranked, whatever the search row says.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import numpy as np
from django.db import transaction
from django.db.models import Exists, OuterRef

from ..indexing.spaces import serving_space
from ..models import EmbeddingSpace, ProxySet, Search, SearchExample
from .cache_privacy import cost_of_making, used_before, wait_as_if_made
from .filters import filtered_scope
from .inputs import text_vectors
from .matches import query_bytes, record_matches
from .plan import QueryInputs, QueryPlan
from .proxies import get_or_generate_proxy_set, write_proxy_images
from .ranking import Ranking, Scope, rank
from .recipe import QueryRecipe, RecipeError, gather_inputs, plan_in_space
from .results import out_of_scope, store_results
from .scope import search_library_ids, visible_library_ids
from .tasks import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)


class SearchFailed(Exception):
    """A search that cannot run; the message is shown to the user as it is."""


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
NO_SPACE = ("No photo index is ready for search yet: an administrator must activate a model profile "
            "(manage.py activate_profile) and let the libraries be indexed.")
# Progress is written at most this often (seconds). A search with cached proxies passes its
# progress steps within ~2 ms, and a write per step would cost it a round trip and a commit each;
# a slow stage (generation, encoding, ranking a large scope) still shows every step.
PROGRESS_INTERVAL = 0.1


class _Run:
    """Timings, the stage under way, and progress held back between writes, of one execution."""

    def __init__(self, search: Search) -> None:
        self.search = search
        self.timings: dict[str, float | bool] = {}
        self.started = time.perf_counter()
        self.phase = "preparing"
        self._held: dict = {}
        self._saved_at = time.perf_counter()

    @cached_property
    def visible_libraries(self) -> list[int]:
        """The libraries the search's user may see now, read once per run."""
        return visible_library_ids(self.search.user)

    def progress(self, value: int, **fields) -> None:
        """Progress, and fields only the page shows (the proxy set): written now when the last
        write is older than PROGRESS_INTERVAL, else held for the next write."""
        self._held.update(fields, progress=value)
        if time.perf_counter() - self._saved_at >= PROGRESS_INTERVAL:
            self.search.save_progress(**self.held())

    def held(self) -> dict:
        """The progress held back, for the next write (a state change takes it along)."""
        fields, self._held = self._held, {}
        self._saved_at = time.perf_counter()
        return fields

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (seconds added to timings[name]) and name it for error messages."""
        self.phase = name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start)

    def rounded_timings(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.timings.items()}

    # ------------------------------------------------------------------ recipe.InputSteps
    def text_vector(self, space: EmbeddingSpace, text: str) -> np.ndarray:
        t, self.timings["text_cached"] = text_vectors.get(space, text, self.search.user_id)
        return t

    def proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet:
        """The search's proxy set: its parent's when refining (no generation, no lookup), else
        the cached set of (text, space, generator, seeds), generated when missing. What the user
        sees of the cache is only what their own searches put there (`cache_privacy`)."""
        self.phase = "proxies"
        search = self.search
        inherited = search.parent.proxy_set if search.parent is not None else None
        if inherited is not None and inherited.space_id == space.pk and inherited.query == text:
            self.timings.update(proxies_lookup=0.0, generation=0.0, proxies_cached=True)
            return inherited
        stage_timings: dict[str, float] = {}
        proxy_set, generated = get_or_generate_proxy_set(space, text, seeds, stage_timings)
        self.timings.update(stage_timings)
        self.timings["proxies_cached"] = not generated and used_before(search.user, proxy_set, search)
        if not generated and not self.timings["proxies_cached"]:
            wait_as_if_made(proxy_set)  # someone else's set: as long as making it took
            self.timings.update(cost_of_making(proxy_set))
        self.timings.setdefault("generation", 0.0)
        return proxy_set

    def negative_proxy_set(self, space: EmbeddingSpace, text: str, seeds: list[int]) -> ProxySet:
        negative_set, generated = get_or_generate_proxy_set(space, text, seeds)
        if not generated and not used_before(self.search.user, negative_set, self.search):
            wait_as_if_made(negative_set)
        return negative_set


# What a run reads of its search, in one query: whether it has example photos, negatives or
# uploads is known before any of them is read (most searches have none).
RUN_QUERYSET = Search.objects.select_related("user", "parent__proxy_set").annotate(
    has_positives=Exists(Search.positive_assets.through.objects.filter(search_id=OuterRef("pk"))),
    has_negatives=Exists(Search.negative_assets.through.objects.filter(search_id=OuterRef("pk"))),
    has_uploads=Exists(SearchExample.objects.filter(search_id=OuterRef("pk"))),
)


def execute(search: Search, fresh: bool = False) -> None:
    """Run `search` to the end: results stored and status DONE, or an exception raised (the
    task marks the search FAILED). A search already DONE returns at once; a re-run of one that
    stopped half-way starts over (its partial state is discarded). `fresh`: the caller has just
    read the search through RUN_QUERYSET."""
    if not fresh:
        search = RUN_QUERYSET.get(pk=search.pk)
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
    # 1. Where: the serving space, and the libraries the user may see now.
    space = serving_space()
    if space is None:
        raise SearchFailed(NO_SPACE)
    library_ids = search_library_ids(search, run.visible_libraries)
    search.mark_running(space)
    # 2. What: the text vector, the proxies, the example photos and the negatives.
    inputs = _gather_inputs(run, space)
    # 3. The query vector u and λ (plan.py).
    with run.stage("aggregation"):
        plan = plan_in_space(space, inputs)
    search.mark_ranking(**run.held())
    # 4. Rank the scope: the libraries, narrowed by the search's filters (ranked inside them, so
    # none of their photos is lost behind photos outside them).
    scope = filtered_scope(library_ids, search.filters)
    with run.stage("ranking"):
        ranking = rank(space, plan.u, scope, search.top_n)
    # 5. Store the results and finish; nothing more when a twin delivery finished first. The
    # proxy images are written once the results can be read (proxies.py).
    ranking = _store(run, plan, space, scope, ranking)
    write_proxy_images(search.proxy_set, search.negative_proxy_set)
    if ranking is None:
        return
    # 6. Count the matches over the whole scope (from the ranking's own scores when it ran in
    # memory), once the results are readable.
    _count_matches(run, space, plan, ranking)


def _gather_inputs(run: _Run, space: EmbeddingSpace) -> QueryInputs:
    """The search's recipe (example photos of libraries the user may see now), gathered in
    `space` by the code an album re-derived in a new space runs too (`recipe.py`)."""
    search = run.search
    images = not search.text_only  # λ = 0 switches the image half off: read none of it
    uploads = list(search.examples.all()) if images and _has(search, "has_uploads") else []
    recipe = QueryRecipe(
        text=search.text, seed=search.seed, k=search.k, text_only=search.text_only,
        disabled_proxies=search.disabled_proxies, lambda_override=search.lambda_override,
        negative_text=search.negative_text,
        positive_assets=_visible_assets(run, search.positive_assets) if images and _has(search, "has_positives") else [],
        negative_assets=_visible_assets(run, search.negative_assets) if images and _has(search, "has_negatives") else [],
        positive_files=[e.file.path for e in uploads if e.kind == SearchExample.Kind.POSITIVE],
        negative_files=[e.file.path for e in uploads if e.kind == SearchExample.Kind.NEGATIVE],
    )
    try:
        return gather_inputs(space, recipe, run)
    except RecipeError as exc:
        raise SearchFailed(str(exc)) from None


def _has(search: Search, name: str) -> bool:
    """RUN_QUERYSET's answer, or True (look) for a search read without it."""
    return getattr(search, name, True)


def _visible_assets(run: _Run, assets) -> list:
    """Example photos from libraries the user may see now (others are ignored, never read)."""
    return list(assets.filter(library_id__in=run.visible_libraries).order_by("pk"))


def _store(run: _Run, plan: QueryPlan, space: EmbeddingSpace, scope: Scope, ranking: Ranking) -> Ranking | None:
    """Store the ranked rows and mark the search done, in one transaction that holds the
    search's row lock: a duplicate delivery running at the same time stores nothing twice.
    Returns None when the search was done already, else the ranking stored.

    The rows are checked against the scope in the database first: a photo deleted, failed or
    moved out of the scope after the ranking read its vectors is never stored. When one is
    found the scope is ranked once more (an in-memory copy catches up on the next read of its
    change feed); whatever still fails the check then is dropped."""
    search = run.search
    started = time.perf_counter()
    for attempt in (1, 2):
        run.phase = "store"
        with transaction.atomic():
            if Search.objects.select_for_update().values_list("status", flat=True).get(pk=search.pk) == Search.Status.DONE:
                return None
            gone = out_of_scope(space, scope, ranking)
            if not gone or attempt == 2:
                ranking = ranking.without(gone)
                store_results(search, ranking.asset_ids, ranking.scores, ranking.parts.text, ranking.parts.image)
                search.mark_done(query_vector=query_bytes(plan.u), result_count=len(ranking.asset_ids),
                                 lambda_used=plan.lam, aggregation=plan.aggregation, timings=run.rounded_timings())
                break
        logger.warning("search %s: %d ranked photos left the scope before they were stored; ranking again",
                       search.pk, len(gone))
        with run.stage("ranking"):
            ranking = rank(space, plan.u, scope, search.top_n)
    # Measured after the commit: what the worker spent before the results could be read.
    # Written with the match count.
    run.timings["store"] = time.perf_counter() - started
    run.timings["total"] = time.perf_counter() - run.started
    return ranking


def _count_matches(run: _Run, space: EmbeddingSpace, plan: QueryPlan, ranking: Ranking) -> None:
    """Estimate the matches over the whole scope: it runs after DONE and must not delay the
    ranked results; the page waits for the count."""
    try:
        record_matches(run.search, space, plan.u, ranking, list(plan.references), run.rounded_timings())
    except Exception:  # the count is an estimate on top of finished results: log, keep the results
        logger.exception("could not count the matching photos of search %s", run.search.pk)
        run.search.save_progress(timings=run.rounded_timings())
