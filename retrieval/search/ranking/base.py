"""What every ranking backend gives back: the ranked rows, and the fast scores of its scope.

A backend (`memory`, `pgvector`) ranks a scope by a fast pass whose scores are within a known
error of the exact ones, then scores the candidates exactly (`retrieval.search.scores`): the
stored rows and everything compared with a cutoff carry exact scores only. `ScopeScores` is
the fast pass over a whole scope, which the match count fits its mixture on and `exact`
certifies its boundary against.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RankedRow:
    """A ranked photo with its exact scores (`retrieval.search.scores`), kept as float32: a
    float32 compared with a Python float (a `real` column read back) compares in float32."""

    asset_id: int
    score: np.float32  # = text_score + image_score in float32
    text_score: np.float32
    image_score: np.float32


class ScopeScores(Protocol):
    """Fast scores of every photo of a scope, each within `error` of its exact score."""

    size: int
    error: float

    def histogram(self, bins: int) -> tuple[np.ndarray, float, float]:
        """(counts per bin, lowest score, highest score): equal bins from lowest to highest."""

    def count_above(self, score: float) -> int:
        """How many photos score more than `score`."""

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, fast scores) of the `k` best photos, best first."""

    def select(self, low: float, high: float) -> np.ndarray:
        """Positions of the photos scoring from `low` to `high`."""

    def photos(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(asset ids, stored float16 vectors) of the photos at `positions`."""


@dataclass
class Ranking:
    """A ranking's rows, best first (score desc, asset id asc), and how to get its scope's fast
    scores for the match count: the memory backend hands over the pass that ranked, pgvector
    scans the scope once more when asked."""

    rows: list[RankedRow]
    backend: str
    scope_scores: Callable[[], ScopeScores] = field(repr=False)
