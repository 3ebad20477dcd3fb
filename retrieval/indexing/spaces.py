"""Embedding spaces: made from an engine profile, looked up, switched to when complete.

Activating a space (which queues its re-index) is a service above the indexing task:
`retrieval.indexing.services.activate_space`.
"""
from __future__ import annotations

import hashlib
import json
import logging

from django.db import transaction
from django.utils import timezone

from ..models import EmbeddingSpace
from .progress import pending_assets
from .signals import space_serving

logger = logging.getLogger(__name__)


def space_for_profile(profile_name: str) -> EmbeddingSpace:
    """The space of a profile's encoders as they are on disk now (created when new).

    Loads the profile's encoders (once per process) to read their dims and weight fingerprints:
    the fingerprint, not the profile name, identifies the space, so replacing the weights in
    the model folder makes a new space instead of mixing old and new vectors. Its vector index
    is built when its first backfill is done (retrieval.indexing.vector_index).
    """
    # Imported where used (here and below): the encoders load torch and the models' libraries,
    # which the web process, reading spaces for every page, never needs.
    from retrieval.engine.encoders import load_encoders

    encoders = load_encoders(profile_name)
    profile = encoders.profile
    versions, fingerprint = encoder_identity(encoders)
    generator = profile.generator + (f" + {profile.decoder}" if profile.decoder else "")
    space, _ = EmbeddingSpace.objects.get_or_create(
        fingerprint=fingerprint,
        defaults={
            "name": f"{profile.name} ({fingerprint[:8]})",
            "profile": profile.name,
            "vlm_model": versions["vlm"],
            "vision_model": versions["vision"],
            "generator_model": generator,
            "vlm_dim": encoders.vlm_dim,
            "vision_dim": encoders.vision_dim,
            "versions": versions,
        },
    )
    return space


def encoder_identity(encoders) -> tuple[dict, str]:
    """What made a space's vectors, and its fingerprint (a hash of exactly that)."""
    versions = {"profile": encoders.profile.name, **encoders.model_versions()}
    return versions, hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()


def encoders_for(space: EmbeddingSpace):
    """The encoders that made `space`, refusing others (weights replaced on disk since)."""
    from retrieval.engine.encoders import load_encoders

    encoders = load_encoders(space.profile)
    if encoder_identity(encoders)[1] != space.fingerprint:
        raise SpaceMismatchError(
            f"The {space.profile!r} weights on disk are not the ones that made {space}; "
            "activate the profile again (manage.py activate_profile) to index into a new space."
        )
    return encoders


class SpaceMismatchError(RuntimeError):
    pass


def active_space() -> EmbeddingSpace | None:
    return EmbeddingSpace.objects.filter(is_active=True).first()


def serving_space() -> EmbeddingSpace | None:
    """The space searches read: complete, or the first one while it is still being filled."""
    return EmbeddingSpace.objects.filter(is_serving=True).first()


def switch_serving_if_complete(space: EmbeddingSpace) -> bool:
    """Mark an active space complete when nothing is pending, and let search use it."""
    with transaction.atomic():
        space = EmbeddingSpace.objects.select_for_update().get(pk=space.pk)
        if not space.is_active or pending_assets(space).exists():
            return False
        if space.completed_at is None:
            space.completed_at = timezone.now()
        if not space.is_serving:
            EmbeddingSpace.objects.filter(is_serving=True).update(is_serving=False)
            space.is_serving = True
            serving_id = space.pk
            transaction.on_commit(lambda: _announce_serving(serving_id))
        space.save(update_fields=["completed_at", "is_serving"])
    return True


def _announce_serving(space_id: int) -> None:
    for receiver, result in space_serving.send_robust(sender=EmbeddingSpace, space_id=space_id):
        if isinstance(result, Exception):
            logger.error("space_serving receiver %r failed for space %s", receiver, space_id, exc_info=result)
