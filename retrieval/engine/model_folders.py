"""Where a model's weights live on this machine, and the error when they are not there.

A model's local folder ``<model_dir()>/<hub id>`` wins over the Hugging Face cache and hub in
every loader; ``missing_weights`` says which folder was looked for and how to fill it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval.engine.profiles import Profile

ENV_MODEL_DIR = "CLETIR_MODEL_DIR"


class MissingWeightsError(RuntimeError):
    """Raised when a model's weights are neither in the local model folder nor obtainable."""


def model_dir() -> Path:
    """Root of local model folders: $CLETIR_MODEL_DIR, else ~/.cache/cletir/models."""
    env = os.environ.get(ENV_MODEL_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cletir" / "models"


def local_folder(model_id: str) -> Path:
    """The folder that, when present, wins over the hub for ``model_id``."""
    return model_dir() / model_id


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE, as the hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_weights(profile: Profile, model_id: str, role: str, cause: BaseException | None = None) -> MissingWeightsError:
    """A MissingWeightsError naming the folder, the id and how to get the weights."""
    folder = local_folder(model_id)
    if profile.random_weights:
        how = (
            f"build them with `python -m retrieval.engine.build_models --profile {profile.name}` "
            f"(random weights, no download)"
        )
    else:
        how = (
            f"download them with `hf download {model_id} --local-dir {folder}` on a machine with "
            f"network access (or unset HF_HUB_OFFLINE so the hub cache can be filled)"
        )
    detail = f" ({type(cause).__name__}: {cause})" if cause else ""
    return MissingWeightsError(
        f"{role} weights for profile {profile.name!r} not found: no local folder {folder} "
        f"and hub id {model_id!r} is not available{detail}; {how}. "
        f"Set {ENV_MODEL_DIR} to use another model folder."
    )
