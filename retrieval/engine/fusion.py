"""Score fusion as one inner product (METHOD.md step 5).

The method mixes two similarities, ``score(x) = (1-λ)<t, I(x)> + λ<q, V(x)>``. Stored as
concatenated vectors, ``e(x) = [I(x); V(x)]`` for a photo and ``u = [(1-λ)t; λq]`` for a query,
the fused score is the single inner product ``<u, e(x)>``. That identity is what lets one
pgvector column with one HNSW (inner-product) index serve the fused ranking, and it is the only
thing this module is about.

All inputs are numpy float32; photo and query parts are expected to be L2-normalised by the
encoders / aggregator. The concatenated vectors are deliberately *not* re-normalised: doing so
would rescale the two halves and break the identity with the fused score.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "photo_vectors",
    "query_vector",
    "query_vectors",
    "score_parts",
    "fused_scores",
]


def _as_2d_float32(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def _check_lambda(lam: float) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    return lam


def photo_vectors(vlm: np.ndarray, vision: np.ndarray) -> np.ndarray:
    """Photo vectors ``e = [I(x); V(x)]``, shape (n, a+b) float32.

    ``vlm`` is (n, a) VLM image features, ``vision`` is (n, b) vision-encoder features.
    """
    vlm2 = _as_2d_float32(vlm, "vlm")
    vis2 = _as_2d_float32(vision, "vision")
    if vlm2.shape[0] != vis2.shape[0]:
        raise ValueError(f"row counts differ: vlm {vlm2.shape[0]} vs vision {vis2.shape[0]}")
    return np.ascontiguousarray(np.concatenate([vlm2, vis2], axis=1))


def query_vector(text: np.ndarray, proxy: np.ndarray, lam: float) -> np.ndarray:
    """Query vector ``u = [(1-λ)t; λq]``, shape (a+b,) float32.

    ``text`` is the (a,) text vector t, ``proxy`` the (b,) aggregated proxy vector q.
    λ=0 is text-only search, λ=1 proxies-only search.
    """
    t = np.asarray(text, dtype=np.float32)
    q = np.asarray(proxy, dtype=np.float32)
    if t.ndim != 1 or q.ndim != 1:
        raise ValueError(f"text and proxy must be 1-D, got {t.shape} and {q.shape}")
    return query_vectors(t[None], q[None], lam)[0]


def query_vectors(texts: np.ndarray, proxies: np.ndarray, lam: float) -> np.ndarray:
    """Batched :func:`query_vector`: (Q, a) texts and (Q, b) proxies -> (Q, a+b)."""
    lam = _check_lambda(lam)
    t = _as_2d_float32(texts, "texts")
    q = _as_2d_float32(proxies, "proxies")
    if t.shape[0] != q.shape[0]:
        raise ValueError(f"row counts differ: texts {t.shape[0]} vs proxies {q.shape[0]}")
    # Scale in float64 then cast once, so (1-λ) and λ are applied without extra rounding.
    out = np.concatenate([(1.0 - lam) * t.astype(np.float64), lam * q.astype(np.float64)], axis=1)
    return out.astype(np.float32)


def score_parts(
    u: np.ndarray, e: np.ndarray, vlm_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split fused scores into their text and image contributions.

    ``u`` is a query vector (a+b,) or a batch (Q, a+b); ``e`` photo vectors (N, a+b).
    Returns ``(fused, text_part, image_part)`` with ``fused = text_part + image_part``:
    ``text_part = (1-λ)<t, I(x)>`` and ``image_part = λ<q, V(x)>``. Shapes are (N,) for a single
    query and (Q, N) for a batch. The product uses the parts to explain a ranking to the user.
    """
    u_arr = np.asarray(u, dtype=np.float32)
    single = u_arr.ndim == 1
    u2 = _as_2d_float32(u_arr, "u")
    e2 = _as_2d_float32(e, "e")
    if u2.shape[1] != e2.shape[1]:
        raise ValueError(f"dims differ: u {u2.shape[1]} vs e {e2.shape[1]}")
    if not 0 < vlm_dim < u2.shape[1]:
        raise ValueError(f"vlm_dim must lie in (0, {u2.shape[1]}), got {vlm_dim}")
    text_part = u2[:, :vlm_dim] @ e2[:, :vlm_dim].T
    image_part = u2[:, vlm_dim:] @ e2[:, vlm_dim:].T
    fused = text_part + image_part
    if single:
        return fused[0], text_part[0], image_part[0]
    return fused, text_part, image_part


def fused_scores(
    texts: np.ndarray,
    proxies: np.ndarray,
    lam: float,
    vlm: np.ndarray,
    vision: np.ndarray,
) -> np.ndarray:
    """Fused scores of Q queries against N photos, (Q, N) float32.

    Computed as the two separate similarity matrices rather than through the concatenated
    vectors: same numbers, but it skips materialising (N, a+b) copies in evaluation loops.
    """
    lam = _check_lambda(lam)
    t = _as_2d_float32(texts, "texts")
    q = _as_2d_float32(proxies, "proxies")
    i_x = _as_2d_float32(vlm, "vlm")
    v_x = _as_2d_float32(vision, "vision")
    out = np.zeros((t.shape[0], i_x.shape[0]), dtype=np.float32)
    # Skip a branch whose weight is exactly 0 so that λ=0 / λ=1 do not need the other features.
    if lam < 1.0:
        out += np.float32(1.0 - lam) * (t @ i_x.T)
    if lam > 0.0:
        out += np.float32(lam) * (q @ v_x.T)
    return out
