"""The authors' trained aggregator (``model.pth`` of github faixan-khan/cletir) as a ``paper`` network.

Their ``inf.py`` builds ``MatchATN(d_model=1024, nhead=1, dropout=0.1, attn_layers=2)`` (their
``config.py``), wraps it in ``nn.DataParallel`` and loads ``torch.load(model.pth)`` into the
wrapper, so the file is a pickled state dict whose names start with ``module.``. It is read
here with ``torch.load(weights_only=True)``: tensors and plain containers only, no code from
the file runs. Names without the prefix (a model saved unwrapped) are accepted too.

The network is checked before it is used: its width must be the vision width of the features
it will aggregate (their released model is 1024 wide: DINOv2-large features), its entries must
be exactly those of :class:`~retrieval.engine.aggregator.PaperAggregatorNet`, and its weights
finite. Their text vectors were plain means of the template embeddings (see
:mod:`retrieval.engine.prompts`), which is what ``TEXT_MEAN`` records.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .aggregator import PaperAggregatorNet

__all__ = ["AuthorsCheckpointError", "TEXT_MEAN", "read_authors_state_dict", "paper_aggregator_from_authors"]

#: The text-vector convention the authors' network was trained and evaluated with.
TEXT_MEAN = "plain"

_DATA_PARALLEL_PREFIX = "module."
_LAYER_KEY = re.compile(r"^self_attn\.layers\.(\d+)\.in_proj_weight$")


class AuthorsCheckpointError(ValueError):
    """The file is not a usable aggregator checkpoint of the authors' format for this space."""


def read_authors_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an authors' checkpoint, ``module.`` prefixes removed."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AuthorsCheckpointError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise AuthorsCheckpointError(
            f"{path} is not a PyTorch state dict that loads with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(state, dict) or not state or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise AuthorsCheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    if all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(_DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return state


def _shape_of(state: dict[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """(width, layer count) from the entries' names and shapes."""
    layers = sorted(int(m.group(1)) for key in state if (m := _LAYER_KEY.match(key)))
    if not layers:
        raise AuthorsCheckpointError(
            f"{path} has no self_attn.layers.N.in_proj_weight entry: not the authors' aggregator "
            f"(entries: {', '.join(sorted(state)[:8])}{', ...' if len(state) > 8 else ''})"
        )
    weight = state["self_attn.layers.0.in_proj_weight"]
    if weight.ndim != 2 or weight.shape[0] != 3 * weight.shape[1]:
        raise AuthorsCheckpointError(
            f"{path}: self_attn.layers.0.in_proj_weight is {tuple(weight.shape)}, expected (3·D, D)"
        )
    return int(weight.shape[1]), len(layers)


def paper_aggregator_from_authors(
    path: str | Path, vision_dim: int, vision_model: str = ""
) -> PaperAggregatorNet:
    """A :class:`PaperAggregatorNet` holding the authors' weights, for ``vision_dim``-d features.

    Raises :class:`AuthorsCheckpointError` with the reason when the file cannot serve them: a
    width other than ``vision_dim``, entries or shapes other than the authors' network's, or
    weights that are not finite. ``vision_model`` is recorded in the network's config.
    """
    path = Path(path)
    state = read_authors_state_dict(path)
    width, layers = _shape_of(state, path)
    if width != vision_dim:
        raise AuthorsCheckpointError(
            f"{path} holds an aggregator for {width}-d vision features, but "
            f"{vision_model or 'this space'}'s features are {vision_dim}-d: it cannot aggregate them. "
            f"Use it with a space whose vision encoder gives {width}-d features (the authors trained on "
            "DINOv2-large, 1024-d: the `paper` profile)."
        )
    net = PaperAggregatorNet(width, layers, vision_model)
    expected = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unexpected:
        raise AuthorsCheckpointError(
            f"{path} is not the authors' {layers}-layer aggregator: missing {missing or 'nothing'}, "
            f"unexpected {unexpected or 'nothing'}"
        )
    wrong = [f"{key} {found[key]} (expected {shape})" for key, shape in expected.items() if found[key] != shape]
    if wrong:
        raise AuthorsCheckpointError(f"{path}: entries of the wrong shape: {'; '.join(wrong)}")
    not_finite = [key for key, value in state.items() if not bool(torch.isfinite(value).all())]
    if not_finite:
        raise AuthorsCheckpointError(f"{path}: non-finite weights in {', '.join(not_finite)}")
    net.load_state_dict(state, strict=True)
    return net.eval()
