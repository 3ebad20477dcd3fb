"""Embedding spaces: made from an engine profile, activated, switched to when complete."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import EmbeddingSpace
from .vector_index import ensure_space_index


def space_for_profile(profile_name: str) -> EmbeddingSpace:
    """The space of a profile's encoders as they are on disk now (created when new).

    Loads the profile's encoders (once per process) to read their dims and weight fingerprints:
    the fingerprint, not the profile name, identifies the space, so replacing the weights in
    the model folder makes a new space instead of mixing old and new vectors.
    """
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
    ensure_space_index(space)
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


def use_aggregator(space: EmbeddingSpace, net, metadata: dict[str, str], origin: str = "") -> Path:
    """Save an aggregation network under MEDIA_ROOT/aggregators/ and make it `space`'s.

    A new file name each time (`origin` tells where the network came from): a search worker
    reloads a space's aggregator when the file changes, and the previous file stays for
    rollback. The space records the network's architecture beside the file.
    """
    from retrieval.engine.aggregator import save_aggregator

    name = f"aggregators/space{space.pk}-{origin}{timezone.now():%Y%m%d-%H%M%S-%f}.safetensors"
    path = Path(settings.MEDIA_ROOT) / name
    save_aggregator(net, path, extra_metadata={"space_fingerprint": space.fingerprint, **metadata})
    space.aggregator_file.name = name
    space.aggregator_architecture = net.config.architecture
    space.save(update_fields=["aggregator_file", "aggregator_architecture"])
    return path


def active_space() -> EmbeddingSpace | None:
    return EmbeddingSpace.objects.filter(is_active=True).first()


def serving_space() -> EmbeddingSpace | None:
    """The space searches read: complete, or the first one while it is still being filled."""
    return EmbeddingSpace.objects.filter(is_serving=True).first()


def activate_space(space: EmbeddingSpace) -> None:
    """Make `space` the one photos are indexed into, and start (re-)indexing every library.

    Search keeps reading the serving space until `space` holds every photo; the very first
    space serves at once, so a new site's libraries are searchable while they are indexed.
    """
    from .indexing import schedule_indexing

    with transaction.atomic():
        # Row locks serialise two admins activating spaces at the same moment.
        list(EmbeddingSpace.objects.select_for_update().filter(Q(is_active=True) | Q(pk=space.pk)))
        space.refresh_from_db()
        if space.is_active:
            return
        EmbeddingSpace.objects.filter(is_active=True).update(is_active=False)
        space.is_active = True
        space.activated_at = timezone.now()
        space.completed_at = None
        space.is_serving = space.is_serving or not EmbeddingSpace.objects.filter(is_serving=True).exists()
        space.save(update_fields=["is_active", "activated_at", "completed_at", "is_serving"])
        transaction.on_commit(lambda: schedule_indexing(space))


def switch_serving_if_complete(space: EmbeddingSpace) -> bool:
    """Mark an active space complete when nothing is pending, and let search use it."""
    from .indexing import pending_assets

    with transaction.atomic():
        space = EmbeddingSpace.objects.select_for_update().get(pk=space.pk)
        if not space.is_active or pending_assets(space).exists():
            return False
        if space.completed_at is None:
            space.completed_at = timezone.now()
        if not space.is_serving:
            EmbeddingSpace.objects.filter(is_serving=True).update(is_serving=False)
            space.is_serving = True
        space.save(update_fields=["completed_at", "is_serving"])
    return True
