"""The seeds of a query's proxies: one rule for the engine and the product.

Kept apart from the modules that load models so that the web process (quotas, cache keys) can
follow the same rule without importing torch.
"""
from __future__ import annotations


def proxy_seeds(seed: int, k: int) -> list[int]:
    """The K generation seeds of a query: consecutive from ``seed`` (reproducible, cacheable)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(range(seed, seed + k))
