"""Embedding spaces, photo vectors, and worker heartbeats."""
from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone
from pgvector.django import HalfVectorField

from assets.models import Asset, Library


class Float32Field(models.FloatField):
    """A float stored as `real` (float32): scores and cutoffs, so that a stored score and a
    stored cutoff are the very numbers `retrieval.search.scores` computed and compare exactly."""

    def db_type(self, connection) -> str:
        return "real"


class EmbeddingSpace(models.Model):
    """One set of models that made vectors: a profile plus exact model versions and dims.

    Everything that identifies how a vector was made is stored here, so a model change creates a
    new space (a new fingerprint) and is re-indexed, never silently mixed with old vectors.
    """

    name = models.CharField(max_length=200)
    profile = models.CharField(max_length=64)
    vlm_model = models.CharField(max_length=300)
    vision_model = models.CharField(max_length=300)
    generator_model = models.CharField(max_length=300)
    vlm_dim = models.PositiveIntegerField()
    vision_dim = models.PositiveIntegerField()
    versions = models.JSONField(default=dict, help_text="What made the vectors: ids, dims, weight fingerprints")
    fingerprint = models.CharField(max_length=64, unique=True)
    # The space new photos are indexed into and a re-index fills. Search reads the *serving*
    # space, which is the active one once every photo has a vector (or failed) in it: until
    # then search keeps using the complete old space, and never mixes two.
    is_active = models.BooleanField(default=False)
    is_serving = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True, help_text="When the re-index after activation finished")
    # Set while an indexing task for this space is queued, so uploads of 10,000 photos queue
    # one task, not 10,000 (see retrieval.indexing.tasks.schedule_indexing).
    indexing_queued_at = models.DateTimeField(null=True, blank=True)
    # Trained aggregation network for this space's vision encoder (safetensors, under
    # MEDIA_ROOT); without one, search uses the mean of the proxies and CLETIR_FUSION_LAMBDA.
    aggregator_file = models.FileField(upload_to="aggregators/", blank=True, max_length=500)
    # Which network that file holds: "cletir" or "paper" (the authors' architecture, see
    # retrieval.engine.aggregator); blank without a file. A file of another architecture than
    # the one recorded here is not used (search falls back to the mean).
    aggregator_architecture = models.CharField(
        max_length=16, blank=True, choices=[("cletir", "cletir"), ("paper", "paper (the authors')")]
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_space"),
            models.UniqueConstraint(fields=["is_serving"], condition=Q(is_serving=True), name="one_serving_space"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def dim(self) -> int:
        """Length of a fused photo vector e = [I(x); V(x)] (METHOD.md step 5)."""
        return self.vlm_dim + self.vision_dim


class AssetEmbedding(models.Model):
    """A photo's fused vector in one space.

    `vector` is a halfvec without a fixed dimension, so spaces of different dims share the
    table; each space gets its own partial expression HNSW index (see `vector_index`).
    """

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="embeddings")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="embeddings")
    vector = HalfVectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset", "space"], name="one_embedding_per_asset_and_space")]
        indexes = [models.Index(fields=["space", "asset"])]

    def __str__(self) -> str:
        return f"asset {self.asset_id} in space {self.space_id}"


class IndexingFailure(models.Model):
    """A photo that could not be embedded in a space, with the reason; it is not retried
    automatically (re-index it from the admin once the cause is fixed)."""

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="indexing_failures")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="failures")
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset", "space"], name="one_failure_per_asset_and_space")]

    def __str__(self) -> str:
        return f"asset {self.asset_id} failed in space {self.space_id}"


class IndexingClaim(models.Model):
    """A photo being indexed into a space, held by one delivery of an indexing task (its lease),
    or left behind by one that died (retrieval.indexing.claims).

    A row lives from the claim to the store: storing the photo's vector or failure deletes it.
    A row that outlives its holder is claimed again (after CLETIR_INDEX_CLAIM_SECONDS, or at once
    by a later delivery of the same task) with `attempts` counting the deliveries; a photo whose
    holders keep dying is marked failed instead of being delivered forever.
    """

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="+")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    lease = models.UUIDField(help_text="The task delivery that holds the claim")
    task_id = models.CharField(max_length=255, blank=True, help_text="The Celery task of that delivery")
    # Null: given up by a later delivery of the same task (its holder is known to be dead).
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1, help_text="Deliveries that claimed the photo")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset", "space"], name="one_claim_per_asset_and_space")]
        indexes = [models.Index(fields=["space", "lease"]), models.Index(fields=["task_id"])]

    def __str__(self) -> str:
        return f"asset {self.asset_id} claimed in space {self.space_id}"


class WorkerHeartbeat(models.Model):
    """A Celery worker process that reported itself recently (read by /healthz)."""

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)
    # What each of its processes ranks with, by pid: the backend, the device and, for the
    # memory backend, the photos and megabytes it holds per space (retrieval.search.ranking).
    ranking = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.hostname


class ProxySet(models.Model):
    """Generated proxy images of a query and their vision features, cached.

    Keyed by what determines them: the normalised query text, the space (its vision encoder
    made the features), the generator (ids, weights, size, steps, prompt: `generator_key`) and
    the seeds. A repeated category query finds its set here and generates nothing.
    """

    query = models.CharField(max_length=300)
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="proxy_sets")
    generator_key = models.CharField(max_length=64)
    generator_versions = models.JSONField(default=dict)
    seeds = models.JSONField(default=list)
    seeds_key = models.CharField(max_length=400, help_text="The seeds joined by commas (part of the cache key)")
    prompt = models.CharField(max_length=400)
    # float32 array (K, vision_dim) in .npy format: read back whole, never queried in SQL.
    features = models.BinaryField()
    generation_seconds = models.FloatField(default=0)
    # What embedding the images cost when the set was made: a user's first search of a set that
    # someone else made reports (and takes) what making it cost (retrieval.search.runner).
    embedding_seconds = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["query", "space", "generator_key", "seeds_key"], name="one_proxy_set_per_key"),
        ]

    def __str__(self) -> str:
        return f"“{self.query}” × {len(self.seeds)}"

    @property
    def k(self) -> int:
        return len(self.seeds)


def proxy_image_path(image: "ProxyImage", filename: str) -> str:
    return f"proxies/{image.proxy_set_id}/{image.index}.webp"


class ProxyImage(models.Model):
    proxy_set = models.ForeignKey(ProxySet, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    file = models.ImageField(upload_to=proxy_image_path, max_length=300)

    class Meta:
        ordering = ["proxy_set", "index"]
        constraints = [models.UniqueConstraint(fields=["proxy_set", "index"], name="one_proxy_image_per_index")]


class SearchStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    GENERATING = "generating", "Generating proxies"
    RANKING = "ranking", "Ranking"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


UNFINISHED = (SearchStatus.QUEUED, SearchStatus.GENERATING, SearchStatus.RANKING)


class SearchQuerySet(models.QuerySet):
    def unfinished(self) -> "SearchQuerySet":
        return self.filter(status__in=UNFINISHED)

    def fail(self, reason: str, now: datetime | None = None) -> int:
        """Mark the unfinished searches among these FAILED with `reason` (the user reads it);
        one that finished meanwhile keeps its outcome. Returns how many were marked."""
        return self.unfinished().update(status=SearchStatus.FAILED, error=reason[:2000],
                                        finished_at=now or timezone.now())


class Search(models.Model):
    """One category query over some libraries, run by a worker on the `search` queue.

    Its state (`status` and what goes with each transition) is written by the methods below
    and by `SearchQuerySet.fail` alone: the runner, the task, the service and the sweeper call
    them, so the life of a search (queued -> generating -> ranking -> done, or failed from any
    unfinished state) can be read in one place.
    """

    Status = SearchStatus

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="searches")
    text = models.CharField(max_length=300, blank=True, help_text="Empty for a search by example photos alone")
    # Empty: every library the user may see when the search runs.
    libraries = models.ManyToManyField(Library, blank=True, related_name="+")
    k = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField(default=0)
    lambda_override = models.FloatField(null=True, blank=True)
    text_only = models.BooleanField(default=False)
    top_n = models.PositiveIntegerField(default=1000)
    # Refinement: a search made from another keeps its proxies (no generation) and changes
    # which proxies count, adds example photos, or adds negatives.
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="refinements")
    disabled_proxies = models.JSONField(default=list, blank=True, help_text="Indexes of proxies switched off")
    positive_assets = models.ManyToManyField(Asset, blank=True, related_name="+")
    negative_assets = models.ManyToManyField(Asset, blank=True, related_name="+")
    negative_text = models.CharField(max_length=300, blank=True)
    # Filters on the photos' metadata inside the scope (retrieval.search.filters.PhotoFilters.to_json).
    filters = models.JSONField(default=dict, blank=True, help_text="Date, camera, keyword and file type filters")

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    proxy_set = models.ForeignKey(ProxySet, on_delete=models.SET_NULL, null=True, blank=True, related_name="searches")
    negative_proxy_set = models.ForeignKey(ProxySet, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    lambda_used = models.FloatField(null=True, blank=True)
    aggregation = models.CharField(max_length=20, blank=True, help_text="mean, trained or none")
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per stage, measured in the worker")
    result_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the search was handed to the `search` queue. Null while it waits behind its user's
    # earlier searches: at most CLETIR_SEARCHES_IN_FLIGHT_PER_USER of a user's are in the queue
    # at once, so one user's hundred searches never hold another user's one behind them
    # (retrieval.search.tasks.dispatch_waiting).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Set when the stale-work sweeper queued the search a second time (its first message was
    # lost before any worker started it); a search is re-queued at most once.
    requeued_at = models.DateTimeField(null=True, blank=True)
    # Where the category's photos end (retrieval.search.cutoff, estimated over every photo in scope):
    # how many match, the score of the last match, and the fitted mixture. Null: not estimated.
    match_count = models.PositiveIntegerField(null=True, blank=True)
    match_cutoff = Float32Field(null=True, blank=True)
    match_estimate = models.JSONField(default=dict, blank=True)
    # The fused query vector u the photos were ranked by (float32 bytes), so the search can be
    # saved as an album that scores photos indexed later.
    query_vector = models.BinaryField(null=True, blank=True)

    objects = SearchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "searches"
        indexes = [models.Index(fields=["user", "status"], name="search_user_status")]

    def __str__(self) -> str:
        return self.text or "search by example"

    @property
    def is_waiting(self) -> bool:
        """Queued behind the user's own earlier searches, not handed to a worker yet."""
        return self.status == self.Status.QUEUED and self.dispatched_at is None

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    # ------------------------------------------------------------------ state transitions
    # Fields a run may write between transitions (throttled progress, what the page shows).
    PROGRESS_FIELDS = frozenset({"progress", "proxy_set", "negative_proxy_set", "timings"})

    def _write(self, **fields) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        # A search's state is derived and short-lived: the search task's connection commits it
        # without waiting for the disk (retrieval.search.tasks.run_search: a database crash loses
        # at most its last fraction of a second, and the stale-work sweep then fails the search
        # with its reason; each state change saves a flush of ~1.5-10 ms on a busy machine).
        Search.objects.filter(pk=self.pk).update(**fields)

    def _progress_fields(self, fields: dict) -> dict:
        unknown = set(fields) - self.PROGRESS_FIELDS
        if unknown:
            raise ValueError(f"not progress fields of a search: {sorted(unknown)}")
        return fields

    def save_progress(self, **fields) -> None:
        """Write progress-only fields (never the status)."""
        if fields:
            self._write(**self._progress_fields(fields))

    def mark_running(self, space: EmbeddingSpace, **progress) -> None:
        """A worker starts (or starts over) the search in `space`: whatever an interrupted run
        left is discarded."""
        self._write(**{**self._progress_fields(progress), "status": self.Status.GENERATING, "progress": 5, "error": "",
                       "space": space, "proxy_set": None, "negative_proxy_set": None,
                       "started_at": timezone.now(), "finished_at": None})

    def mark_ranking(self, **progress) -> None:
        self._write(**{**self._progress_fields(progress), "progress": 75, "status": self.Status.RANKING})

    def mark_done(self, *, query_vector: bytes, result_count: int, lambda_used: float, aggregation: str,
                  timings: dict) -> None:
        """The results are stored (call inside the transaction that stores them, with the row
        locked). The query vector u is kept with them: albums and match counts score by it."""
        self._write(status=self.Status.DONE, progress=100, query_vector=query_vector, result_count=result_count,
                    lambda_used=lambda_used, aggregation=aggregation, timings=timings, finished_at=timezone.now())

    def mark_failed(self, reason: str) -> bool:
        """Fail the search with a reason the user reads, unless it finished already."""
        failed = bool(Search.objects.filter(pk=self.pk).fail(reason))
        if failed:
            self.refresh_from_db(fields=["status", "error", "finished_at"])
        return failed

    def mark_requeued(self, now: datetime) -> bool:
        """Claim the one re-queue a search that no worker started may get (the sweeper's):
        True when this call made it, False when it was queued again already."""
        claimed = Search.objects.filter(pk=self.pk, status=self.Status.QUEUED, requeued_at__isnull=True).update(
            requeued_at=now)
        if claimed:
            self.requeued_at = now
        return bool(claimed)

    def record_matches(self, count: int, cutoff: float, estimate: dict, timings: dict | None = None) -> None:
        """The match estimate of a finished search (not a state change: the results stand), and
        its final timings in the same write when given."""
        fields = {"match_count": count, "match_cutoff": cutoff, "match_estimate": estimate}
        self._write(**fields, **({"timings": timings} if timings is not None else {}))


def search_example_path(example: "SearchExample", filename: str) -> str:
    return f"search-examples/{example.search_id}/{example.pk or 'new'}-{example.kind}.jpg"


class SearchExample(models.Model):
    """A photo uploaded to a search as an extra proxy (positive) or a negative example."""

    class Kind(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEGATIVE = "negative", "Negative"

    search = models.ForeignKey(Search, on_delete=models.CASCADE, related_name="examples")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    file = models.ImageField(upload_to=search_example_path, max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)


class SearchRanking(models.Model):
    """A search's stored results: one row, the ranked photos and their scores as arrays in rank
    order (written in one binary COPY when the search ends; `retrieval.search.results`).

    One row rather than one per photo: a thousand rows cost a thousand heap tuples and index
    entries to write (~16 ms on a small, busy machine, bench/search.py); one row of arrays
    costs one. Read through `SearchResult`, a view that unnests them.
    """

    search = models.OneToOneField(Search, on_delete=models.CASCADE, primary_key=True, related_name="ranking")
    asset_ids = ArrayField(models.BigIntegerField())
    scores = ArrayField(Float32Field())
    text_scores = ArrayField(Float32Field(), help_text="(1-λ)·<t, I(x)>")
    image_scores = ArrayField(Float32Field(), help_text="λ·<q, V(x)> (minus the negative part, when any)")


class SearchResult(models.Model):
    """One ranked photo of a search, read through the view `retrieval_searchresult` over
    `SearchRanking` (read-only; created in migration 0007).

    The view joins the photos, so a photo deleted after the search simply drops out of its
    results (its rank stays a gap); deleting a search deletes its `SearchRanking` row. `id` is
    the search id × 2^20 + the rank: unique, for the admin and the paginators.
    """

    id = models.BigIntegerField(primary_key=True)
    search = models.ForeignKey(Search, on_delete=models.DO_NOTHING, related_name="results", db_constraint=False)
    asset = models.ForeignKey(Asset, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    rank = models.PositiveIntegerField()
    score = Float32Field()
    text_score = Float32Field(help_text="(1-λ)·<t, I(x)>")
    image_score = Float32Field(help_text="λ·<q, V(x)> (minus the negative part, when any)")

    class Meta:
        managed = False
        db_table = "retrieval_searchresult"
        ordering = ["search", "rank"]


class AlbumDerivation(models.TextChoices):
    """Where an album stands with the serving space (retrieval.albums.derive)."""

    CURRENT = "current", "Up to date"
    UPDATING = "updating", "Updating for the new model"
    FAILED = "failed", "Update for the new model failed"


class Album(models.Model):
    """A saved category ("smart album"): a search's query vector and match cutoff, kept so
    that photos indexed later join it when they score above the cutoff (retrieval.albums).

    Beside the vector it keeps the search's recipe (what the vector was made from: text, seed,
    K, λ, kept proxies, example and negative photos, uploaded examples, libraries), so that when
    another space starts serving, the album is made again there (retrieval.albums.derive)."""

    Derivation = AlbumDerivation

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="albums")
    name = models.CharField(max_length=200)
    # Empty: every library the user may see (at the time a photo is scored or shown).
    libraries = models.ManyToManyField(Library, blank=True, related_name="+")
    # PROTECT: an album's space cannot be deleted until the album is re-derived in the serving
    # space (retrieval.albums.derive): its photos and cutoff still come from it meanwhile.
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.PROTECT, null=True, blank=True, related_name="albums",
                              help_text="The space of the query vector; photos of other spaces are not scored")
    query_vector = models.BinaryField(help_text="u = [(1-λ)t; λq] as float32 bytes")
    cutoff = Float32Field(help_text="Photos scoring at least this join the album")
    source_search = models.ForeignKey(Search, on_delete=models.SET_NULL, null=True, blank=True, related_name="albums")
    proxy_set = models.ForeignKey(ProxySet, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    disabled_proxies = models.JSONField(default=list, blank=True)
    # The recipe (copied from the search when the album is saved; the source search may go).
    text = models.CharField(max_length=300, blank=True)
    k = models.PositiveSmallIntegerField(default=0)
    seed = models.BigIntegerField(default=0)
    lambda_override = models.FloatField(null=True, blank=True)
    text_only = models.BooleanField(default=False)
    negative_text = models.CharField(max_length=300, blank=True)
    positive_assets = models.ManyToManyField(Asset, blank=True, related_name="+")
    negative_assets = models.ManyToManyField(Asset, blank=True, related_name="+")
    # Re-derivation in a newly serving space: queued (UPDATING) or FAILED with its reason; the
    # album keeps showing its photos from `space` meanwhile.
    derivation = models.CharField(max_length=10, choices=Derivation.choices, default=Derivation.CURRENT)
    derivation_error = models.TextField(blank=True)
    derivation_queued_at = models.DateTimeField(null=True, blank=True,
                                                help_text="When the last re-derivation was queued (the sweeper queues "
                                                          "a stale or failed one again)")
    derived_at = models.DateTimeField(null=True, blank=True, help_text="When the album was last re-derived")
    # Read-only for the members of its libraries (each sees the photos of libraries they see).
    shared = models.BooleanField(default=False)
    filters = models.JSONField(default=dict, blank=True, help_text="The saved search's filters (PhotoFilters.to_json)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


def album_example_path(example: "AlbumExample", filename: str) -> str:
    return f"album-examples/{example.album_id}/{uuid.uuid4().hex}-{example.kind}.jpg"


class AlbumExample(models.Model):
    """An uploaded example photo of the album's recipe: the album's own copy of its search's
    upload (each owner deletes its own files), encoded again in every new space."""

    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="examples")
    kind = models.CharField(max_length=10, choices=SearchExample.Kind.choices)
    file = models.ImageField(upload_to=album_example_path, max_length=300)


class AlbumPhoto(models.Model):
    """A photo's place in an album: added by its score (auto) or by hand (pinned), or taken out
    by hand (removed: kept as a row so that re-indexing or rescoring never brings it back)."""

    class State(models.TextChoices):
        AUTO = "auto", "Above the cutoff"
        PINNED = "pinned", "Pinned"
        REMOVED = "removed", "Removed"

    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="photos")
    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="+")
    score = Float32Field(null=True, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.AUTO)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["album", "asset"], name="one_album_photo_per_asset")]
        indexes = [models.Index(fields=["album", "state"])]

    def __str__(self) -> str:
        return f"asset {self.asset_id} in album {self.album_id} ({self.state})"
