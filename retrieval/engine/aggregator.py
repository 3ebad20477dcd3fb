"""The proxy aggregation network and the fusion weight λ (METHOD.md steps 4 and 5).

K generated proxy images, embedded by the vision encoder as g_1..g_K, become one query vector q:

* a CLS token starts as the mean of the (active) g_k;
* L=2 single-head attention layers of width D = dim(V); in each layer the CLS token attends to
  the sequence [CLS, g_1..g_K] and only the CLS token is updated: the proxies are the same,
  unmodified tokens in every layer (there is no proxy-to-proxy attention and no proxy update);
* the query and key projections start tied (identical initial weights), then train separately;
* q = normalize(CLS_L).

The network also owns the fusion weight w, with λ = sigmoid(w) and w = 0 (λ = 0.5) at start.

Two architectures implement this (``AggregatorConfig.architecture``):

* ``cletir`` (:class:`AggregatorNet`): a LayerNorm on the query/key inputs and a residual
  ``cls + out_proj(update)``, value and output maps initialised as the identity, layers
  initialised independently.
* ``paper`` (:class:`PaperAggregatorNet`): the authors' network (github faixan-khan/cletir,
  ``agg_matcher.py``) exactly, down to its parameter names, so their trained ``model.pth`` loads
  into it with ``strict=True``: each layer is an ``nn.MultiheadAttention`` whose output
  *replaces* the CLS (no residual, no normalisation), with their initialisation and their
  attention dropout of 0.1 while training.

README.md ("Where cletir differs from the paper") says what each difference does on planted data.

Weights are saved as safetensors; the architecture config and the identity of the vision
encoder it was trained for live in the safetensors metadata, so a file is self-describing and
the product can refuse a network trained for another vision encoder (and fall back to the
mean, see :func:`aggregate`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "PAPER_ATTENTION_DROPOUT",
    "AggregatorConfig",
    "ProxyAggregator",
    "AggregatorNet",
    "CLSAttentionLayer",
    "PaperAggregatorNet",
    "build_aggregator",
    "save_aggregator",
    "load_aggregator",
    "read_aggregator_metadata",
    "aggregate",
    "mean_pool",
    "fusion_lambda",
    "FORMAT",
]

#: Tag stored in the safetensors metadata; bump when the parameter layout changes.
FORMAT = "cletir-aggregator/1"

#: The aggregation networks the engine can build, train, save and load (module docstring).
ARCHITECTURES = ("cletir", "paper")
#: What training builds unless told otherwise: the architecture that trained better on
#: bench/engine_synthetic.py (README.md, "Where cletir differs from the paper").
DEFAULT_ARCHITECTURE = "cletir"
#: The authors' attention dropout (their config.py), part of the paper recipe when training.
PAPER_ATTENTION_DROPOUT = 0.1


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything needed to rebuild an aggregation network besides its weights."""

    dim: int
    layers: int = 2
    # Identity of the vision encoder whose features the network was trained on (e.g.
    # "facebook/dinov2-small"). Informational for the net, decisive for the product: a network
    # is only valid for the features it was trained on.
    vision_model: str = ""
    # Files written before architectures existed hold cletir's network: the default says so.
    architecture: str = "cletir"
    # Probability of dropping an attention weight while training; no effect at inference.
    attention_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.layers <= 0:
            raise ValueError(f"dim and layers must be positive, got dim={self.dim} layers={self.layers}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown aggregator architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must lie in [0, 1), got {self.attention_dropout}")


class ProxyAggregator(nn.Module):
    """What the product needs of an aggregation network, whichever its architecture.

    ``forward(proxies (B, K, D), mask (B, K) bool or None) -> q (B, D)`` with unit rows, and the
    fusion logit w with λ = sigmoid(w).
    """

    config: AggregatorConfig

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def fusion_logit(self) -> nn.Parameter:
        """The trainable w of λ = sigmoid(w)."""
        raise NotImplementedError

    def lam(self) -> float:
        """The fusion weight λ = sigmoid(w) as a Python float."""
        return float(torch.sigmoid(self.fusion_logit.detach()).reshape(()))

    def _checked_mask(self, proxies: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Validate the inputs of ``forward``; the mask as a bool tensor on the proxies' device."""
        if proxies.ndim != 3 or proxies.shape[-1] != self.dim:
            raise ValueError(f"proxies must be (B, K, {self.dim}), got {tuple(proxies.shape)}")
        if mask is None:
            return None
        mask = mask.to(device=proxies.device, dtype=torch.bool)
        if mask.shape != proxies.shape[:2]:
            raise ValueError(f"mask must be {tuple(proxies.shape[:2])}, got {tuple(mask.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every query needs at least one active proxy")
        return mask


class CLSAttentionLayer(nn.Module):
    """One single-head attention layer that updates only the CLS token.

    ``cls_new = cls + W_o · Σ_j a_j W_v x_j`` over the tokens x = [cls, g_1..g_K], with
    ``a = softmax(q(LN(cls)) · k(LN(x))ᵀ / sqrt(D))`` and masked proxies at -inf. The attention
    logits are computed on LayerNorm-ed tokens (pre-norm: logits in a sane range whatever the
    feature scale, and LN removes the component all features share), the values on the raw tokens
    so that the update lives in the feature space itself.
    """

    def __init__(self, dim: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.attention_dropout = attention_dropout
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        with torch.no_grad():
            # Tied start (METHOD.md): with W_q = W_k the initial logit of token j is a similarity
            # <W LN(cls), W LN(x_j)> (about sqrt(D)/3 times the correlation for the default init),
            # so from the start the CLS prefers the proxies that agree with the consensus.
            self.k_proj.weight.copy_(self.q_proj.weight)
            self.k_proj.bias.copy_(self.q_proj.bias)
            # Identity value and output maps + residual: the update is an attention-weighted
            # average of the tokens, so at start the output is normalize(mean + weighted mean),
            # close to the mean-pool fallback, and training only has to reshape the weights.
            # (We tried the usual zero-initialised output projection, which starts at exactly
            # the mean: the value path then has to be learnt from scratch as a free D x D map,
            # and on bench/engine_synthetic.py it memorised the training categories: validation
            # mAP never got clearly above the mean's and fell as training went on, where this
            # init trains to a clear held-out gain. Weight decay pulls W_v, W_o towards 0, i.e.
            # towards the plain mean, which is the safe direction.)
            nn.init.eye_(self.v_proj.weight)
            nn.init.zeros_(self.v_proj.bias)
            nn.init.eye_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, cls: torch.Tensor, proxies: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``cls`` (B, D), ``proxies`` (B, K, D), ``mask`` (B, K) bool -> new CLS (B, D).

        The proxies are only read: the layer returns the CLS token alone, so no later layer can
        ever see modified proxies.
        """
        tokens = torch.cat([cls[:, None, :], proxies], dim=1)  # (B, 1+K, D)
        normed = self.norm(tokens)
        query = self.q_proj(normed[:, :1])  # (B, 1, D): only the CLS asks
        keys = self.k_proj(normed)  # (B, 1+K, D)
        values = self.v_proj(tokens)
        logits = (query @ keys.transpose(1, 2)) / math.sqrt(self.dim)  # (B, 1, 1+K)
        if mask is not None:
            # The CLS itself is always visible, so a row never has all logits at -inf.
            keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)[:, None, :]
            logits = logits.masked_fill(~keep, float("-inf"))
        attn = F.dropout(logits.softmax(dim=-1), self.attention_dropout, self.training)
        update = (attn @ values)[:, 0]  # (B, D)
        return cls + self.out_proj(update)


class AggregatorNet(ProxyAggregator):
    """cletir's architecture: METHOD.md step 4 with :class:`CLSAttentionLayer`, plus ``w``."""

    def __init__(
        self, dim: int, layers: int = 2, vision_model: str = "", attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.config = AggregatorConfig(
            dim=dim, layers=layers, vision_model=vision_model, architecture="cletir",
            attention_dropout=attention_dropout,
        )
        self.layers = nn.ModuleList(CLSAttentionLayer(dim, attention_dropout) for _ in range(layers))
        # w = 0 -> λ = 0.5: no preference between the text and proxy branches before training.
        self.w = nn.Parameter(torch.zeros(()))

    @property
    def fusion_logit(self) -> nn.Parameter:
        return self.w

    def forward(self, proxies: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``proxies`` (B, K, D), ``mask`` (B, K) bool (False = ignore) -> q (B, D), unit norm."""
        mask = self._checked_mask(proxies, mask)
        cls = _masked_mean(proxies, mask)
        for layer in self.layers:
            cls = layer(cls, proxies, mask)
        return F.normalize(cls, dim=-1)


class _ClonedLayers(nn.Module):
    """Copies of one attention layer, under the authors' parameter names (``layers.N.*``)."""

    def __init__(self, template: nn.MultiheadAttention, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(template) for _ in range(count))


class PaperAggregatorNet(ProxyAggregator):
    """The authors' network (``MatchATN`` of faixan-khan/cletir) with their parameter names.

    Each layer is a single-head ``nn.MultiheadAttention``; the CLS token, the mean of the
    proxies at start, is *replaced* by the layer's output for [CLS, g_1..g_K] (no residual, no
    normalisation), q = normalize(CLS_L), λ = sigmoid(``lamda``).

    The state dict is theirs entry for entry: ``attn_layer.*`` (the template layer they build
    first and copy; it stays a registered module in their model, so it is in their checkpoint,
    although the forward pass never uses it), ``self_attn.layers.N.{in_proj_weight,
    in_proj_bias, out_proj.weight, out_proj.bias}`` and ``lamda`` of shape (1,).

    The initialisation replays theirs step by step, in the same order of random draws, so that
    ``torch.manual_seed(s)`` gives the same weights as their code: ``nn.MultiheadAttention``'s
    own init (xavier-uniform input projection, zero biases), the key rows copied from the query
    rows, the template deep-copied into every layer, then every output projection redrawn from
    a truncated normal with std 0.02 and a zero bias.

    Their forward pass computes the attention output of every token and keeps the CLS row; only
    the CLS row is computed here (the same numbers, see tests/engine/test_paper_aggregator.py).
    A mask (proxies the user switched off) removes proxies from the starting mean and from the
    keys, which their code, having no mask, never needed.
    """

    def __init__(
        self,
        dim: int,
        layers: int = 2,
        vision_model: str = "",
        attention_dropout: float = PAPER_ATTENTION_DROPOUT,
    ) -> None:
        super().__init__()
        self.config = AggregatorConfig(
            dim=dim, layers=layers, vision_model=vision_model, architecture="paper",
            attention_dropout=attention_dropout,
        )
        template = nn.MultiheadAttention(dim, num_heads=1, dropout=attention_dropout, batch_first=True)
        with torch.no_grad():
            # Tied start (METHOD.md): the key rows of the packed input projection := the query rows.
            template.in_proj_weight[dim : 2 * dim] = template.in_proj_weight[:dim]
        self.attn_layer = template
        self.self_attn = _ClonedLayers(template, layers)
        self.lamda = nn.Parameter(torch.zeros(1))
        # Their `self.apply(_init_weights)` reaches the output projections (the only nn.Linear
        # modules) in registration order: the template's first, then each layer's.
        for attention in (self.attn_layer, *self.self_attn.layers):
            nn.init.trunc_normal_(attention.out_proj.weight, std=0.02)
            nn.init.zeros_(attention.out_proj.bias)

    @property
    def fusion_logit(self) -> nn.Parameter:
        return self.lamda

    def forward(self, proxies: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``proxies`` (B, K, D), ``mask`` (B, K) bool (False = ignore) -> q (B, D), unit norm."""
        mask = self._checked_mask(proxies, mask)
        ignored = None
        if mask is not None:
            # The CLS itself is always a key, so no row has every key ignored.
            ignored = ~torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        cls = _masked_mean(proxies, mask)[:, None, :]  # (B, 1, D)
        for attention in self.self_attn.layers:
            tokens = torch.cat([cls, proxies], dim=1)
            cls, _ = attention(cls, tokens, tokens, key_padding_mask=ignored, need_weights=False)
        return F.normalize(cls[:, 0], dim=-1)


def build_aggregator(config: AggregatorConfig) -> ProxyAggregator:
    """A freshly initialised network of ``config.architecture``."""
    network = {"cletir": AggregatorNet, "paper": PaperAggregatorNet}[config.architecture]
    return network(config.dim, config.layers, config.vision_model, config.attention_dropout)


def _masked_mean(proxies: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Switched-off proxies must not leak into the starting CLS token either.
    if mask is None:
        return proxies.mean(dim=1)
    weights = mask.to(proxies.dtype)[..., None]
    return (proxies * weights).sum(dim=1) / weights.sum(dim=1)


def save_aggregator(
    net: ProxyAggregator, path: str | Path, extra_metadata: dict[str, str] | None = None
) -> None:
    """Write the weights (and w) as safetensors, the config as JSON in the file metadata."""
    metadata = {"format": FORMAT, "config": json.dumps(asdict(net.config), sort_keys=True)}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[key] = str(value)
    tensors = {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def read_aggregator_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a saved aggregator (format, config JSON, extras)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_aggregator(path: str | Path, device: str | torch.device = "cpu") -> ProxyAggregator:
    """Rebuild the network of a file written by :func:`save_aggregator`, of the architecture
    its metadata names (``cletir`` when it names none: files from before the option)."""
    metadata = read_aggregator_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={metadata.get('format')!r})")
    config = AggregatorConfig(**json.loads(metadata["config"]))
    net = build_aggregator(config)
    net.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return net.to(device).eval()


def mean_pool(proxies: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The fallback query: normalize(mean of the active g_k). (K, D) -> (D,), (B, K, D) -> (B, D)."""
    g = np.asarray(proxies, dtype=np.float32)
    batched = g.ndim == 3
    g3 = g if batched else g[None]
    m3 = None if mask is None else np.asarray(mask, dtype=bool).reshape(g3.shape[:2])
    if m3 is None:
        mean = g3.astype(np.float64).mean(axis=1)
    else:
        if not m3.any(axis=1).all():
            raise ValueError("every query needs at least one active proxy")
        w = m3.astype(np.float64)[..., None]
        mean = (g3 * w).sum(axis=1) / w.sum(axis=1)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    out = (mean / np.maximum(norms, 1e-12)).astype(np.float32)
    return out if batched else out[0]


def aggregate(
    proxies: np.ndarray, net: ProxyAggregator | None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Aggregate proxy features into the query vector q (unit norm, float32).

    ``proxies`` is (K, D) -> (D,), or a batch (B, K, D) -> (B, D); ``mask`` (K,) / (B, K) bool,
    False = ignore that proxy. ``net=None`` is the mean-pool fallback, the only correct choice
    when no network was trained for the active vision encoder.
    """
    g = np.asarray(proxies, dtype=np.float32)
    if g.ndim not in (2, 3):
        raise ValueError(f"proxies must be (K, D) or (B, K, D), got {g.shape}")
    if net is None:
        return mean_pool(g, mask)
    batched = g.ndim == 3
    g3 = g if batched else g[None]
    param = next(net.parameters())
    x = torch.from_numpy(np.ascontiguousarray(g3)).to(device=param.device, dtype=param.dtype)
    m = None
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=bool).reshape(g3.shape[:2])).to(param.device)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            q = net(x, m).float().cpu().numpy()
    finally:
        net.train(was_training)
    return q if batched else q[0]


def fusion_lambda(net: ProxyAggregator | None, default: float = 0.5) -> float:
    """λ for fusion: the learned sigmoid(w) of a trained network, else ``default``."""
    if net is None:
        return float(default)
    return net.lam()
