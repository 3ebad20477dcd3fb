"""Template context every page needs from `retrieval`."""
from __future__ import annotations

from retrieval.engine.profiles import PROFILES

from .indexing.spaces import serving_space


def model_banner(request) -> dict:
    """Warn on every page when search runs on random-weight models (demo and test sites)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    space = serving_space()
    profile = PROFILES.get(space.profile) if space else None
    if profile is not None and profile.random_weights:
        return {"random_weight_models": space.profile}
    return {}
