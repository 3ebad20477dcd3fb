"""The per-process model cache: a worker loads each model once and keeps it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from retrieval.engine.model_folders import model_dir
from retrieval.engine.profiles import Profile
from retrieval.engine.runtime import as_profile, resolve_device

_LOADED: dict[tuple, object] = {}
_LOADED_LOCK = threading.Lock()


def load_once(factory: Callable, profile: Profile | str, device: str | None = None):
    """`factory(profile, device)`, built once per process for each (factory, profile, device,
    model folder): a worker loads its models on first use and keeps them."""
    prof = as_profile(profile)
    resolved = str(resolve_device(prof, device))
    key = (factory, prof, resolved, str(model_dir()))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = factory(prof, resolved)
        return _LOADED[key]
