"""A replica of the authors' aggregator and inference (github faixan-khan/cletir), for tests only.

Same module structure as their ``agg_matcher.py`` (a MultiheadAttention subclass that copies the
query rows of the input projection into the key rows, a layer stack of deep copies that runs
full self-attention over [CLS, proxies] and keeps only the new CLS, ``MatchATN`` with its
template layer, ``lamda``, and ``apply`` of their weight init) and the fusion of their
``inf.py`` (plain mean of the template embeddings, ``[(1-λ)t ; λq]`` against ``[I(x) ; V(x)]``),
so that the product's ``paper`` architecture is checked against the structure their trained
``model.pth`` was saved from, not against itself. Product code never imports this.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def _authors_init(module: nn.Module) -> None:
    # Their _init_weights: truncated-normal linear/embedding weights, unit norm-layer scales,
    # zero biases. Here only the attention output projections are nn.Linear.
    if isinstance(module, nn.Conv2d):
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        nn.init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


class TiedQueryKeyAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose key rows of the packed input projection start as the query rows."""

    def __init__(self, embed_dim: int, num_heads: int, batch_first: bool, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, batch_first=batch_first, **kwargs)
        self.in_proj_weight.data[embed_dim : 2 * embed_dim] = self.in_proj_weight.data[:embed_dim]


class ClsReplacingStack(nn.Module):
    """Deep copies of one layer; each layer's CLS output replaces the CLS, proxies stay as they are."""

    def __init__(self, layer: nn.Module, count: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))
        self.num_layers = count
        self.norm = norm

    def forward(self, tokens: torch.Tensor):
        x = tokens
        weights = []
        for layer in self.layers:
            out, attn = layer(x, x, x)  # every token attends to every token, as theirs
            x = torch.cat((out[:, :1], x[:, 1:]), dim=1)
            weights.append(attn)
        if self.norm is not None:
            out = self.norm(out)
        return out, weights


class MatchATN(nn.Module):
    """The authors' aggregator: template layer, its copies, ``lamda``, their init."""

    def __init__(self, d_model: int, nhead: int, dropout: float, num_encoder_layers: int) -> None:
        super().__init__()
        assert d_model % 2 == 0
        self.attn_layer = TiedQueryKeyAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.self_attn = ClsReplacingStack(self.attn_layer, num_encoder_layers)
        self.lamda = nn.Parameter(torch.tensor([0.0]))
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()
        self.apply(_authors_init)

    def forward(self, proxies: torch.Tensor):
        cls = proxies.mean(dim=1, keepdim=True)
        x, _ = self.self_attn(torch.cat([cls, proxies], dim=1))
        q = x[:, 0]
        return q / q.norm(dim=-1, keepdim=True), self.sigmoid(self.lamda)


def authors_model(dim: int, layers: int = 2) -> MatchATN:
    """The model as their inf.py builds it (config.py: nhead 1, dropout 0.1, 2 layers)."""
    return MatchATN(dim, 1, 0.1, layers)


def authors_fused_scores(
    model: MatchATN,
    template_text: np.ndarray,
    proxies: np.ndarray,
    db_vlm: np.ndarray,
    db_vision: np.ndarray,
    renormalise_text: bool = False,
) -> np.ndarray:
    """inf.py's fused scores (N, Q): one query at a time through the model in eval mode.

    ``template_text`` (Q, T, Dt): one embedding per prompt template; they take the plain mean
    (``renormalise_text`` switches to the re-normalised mean, to check the other convention).
    """
    model.eval()
    texts, queries = [], []
    lam = None
    for per_template, g in zip(template_text, proxies):
        t = torch.from_numpy(per_template).float()[None]
        if t.shape[1] > 1 and t.ndim > 2:
            t = t.mean(dim=1)
        if renormalise_text:
            t = t / t.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            q, lam = model(torch.from_numpy(g).float()[None])
        texts.append(t.squeeze().numpy())
        queries.append(q.squeeze().numpy())
    lam = lam.squeeze().numpy()
    query_vectors = np.concatenate((np.array(texts) * (1 - lam), lam * np.array(queries)), axis=1)
    return np.concatenate((db_vlm, db_vision), axis=1) @ query_vectors.T


def save_authors_checkpoint(model: MatchATN, path) -> None:
    """Save as their inf.py expects to load it: the state dict of the nn.DataParallel wrapper."""
    torch.save(nn.DataParallel(model).state_dict(), path)
