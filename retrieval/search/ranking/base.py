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
from functools import cached_property
from typing import Protocol

import numpy as np

from ..cutoff import ScoreHistogram
from ..scores import ScoreParts


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

    def histogram(self, bins: int) -> ScoreHistogram:
        """The scores' counts in equal bins from the lowest to the highest."""

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
    """A ranking's photos, best first (score desc, asset id asc), with their exact score parts,
    and how to get its scope's fast scores for the match count: the memory backend hands over
    the pass that ranked, pgvector scans the scope once more when asked.

    `as_of` is the transaction-id watermark of the data it ranked (the xmin of the snapshot
    it was read in): every change it cannot reflect was made by a transaction at or above it,
    so the change feed tells what to check before storing (`retrieval.search.results`)."""

    asset_ids: np.ndarray
    parts: ScoreParts
    backend: str
    scope_scores: Callable[[], ScopeScores] = field(repr=False)
    as_of: int | None = None

    @classmethod
    def empty(cls, backend: str, scope_scores: Callable[[], ScopeScores], as_of: int | None = None) -> Ranking:
        nothing = np.zeros(0, dtype=np.float32)
        return cls(np.zeros(0, dtype=np.int64), ScoreParts(nothing, nothing), backend, scope_scores, as_of)

    @property
    def scores(self) -> np.ndarray:
        return self.parts.score

    @cached_property
    def rows(self) -> list[RankedRow]:
        score = self.parts.score
        return [RankedRow(asset_id=int(a), score=s, text_score=t, image_score=i)
                for a, s, t, i in zip(self.asset_ids.tolist(), score, self.parts.text, self.parts.image)]

    def without(self, asset_ids) -> Ranking:
        """The same ranking less these photos (the rest keep their order)."""
        keep = ~np.isin(self.asset_ids, np.asarray(list(asset_ids), dtype=np.int64))
        return Ranking(self.asset_ids[keep], ScoreParts(self.parts.text[keep], self.parts.image[keep]), self.backend,
                       self.scope_scores, self.as_of)
