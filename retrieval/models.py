"""Embedding spaces, photo vectors, and worker heartbeats."""
from __future__ import annotations

from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField

from assets.models import Asset


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
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_space"),
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


class WorkerHeartbeat(models.Model):
    """A Celery worker process that reported itself recently (read by /healthz)."""

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.hostname
