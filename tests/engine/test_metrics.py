"""AP / mAP on hand-computed rankings (revisited Oxford/Paris compute_ap), precision/recall@k."""

import numpy as np
import pytest

from retrieval.engine.metrics import (
    average_precision,
    average_precision_from_ranks,
    average_precision_ranked,
    average_precisions,
    mean_average_precision,
    precision_at_k,
    recall_at_k,
    ranked_positive_flags,
)


def _reference_compute_ap(ranks: list[int], nres: int) -> float:
    """A literal loop transcription of revisited Oxford/Paris compute_ap."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else j / rank
        precision_1 = (j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([1, 0, 0, 0], 1.0),  # one positive, first
        ([0, 0, 1, 0], (0 + 1 / 3) / 2),  # one positive at rank 2: 1/6
        ([1, 1, 0, 0], 1.0),  # all positives first
        ([0, 0, 1, 1], (1 / 6 + (1 / 3 + 1 / 2) / 2) / 2),  # all positives last: 7/24
        ([1, 0, 1, 0, 0, 1], (1 + (1 / 2 + 2 / 3) / 2 + (2 / 5 + 3 / 6) / 2) / 3),
    ],
)
def test_ap_of_hand_computed_rankings(flags: list[int], expected: float) -> None:
    assert average_precision_ranked(np.array(flags)) == pytest.approx(expected, abs=1e-12)
    ranks = np.flatnonzero(flags)
    assert average_precision_from_ranks(ranks) == pytest.approx(expected, abs=1e-12)


def test_all_last_value_is_seven_24ths() -> None:
    # The trapezoid rule is not the step-wise AP (which would give (1/3 + 2/4) / 2 = 5/12).
    assert average_precision_ranked(np.array([0, 0, 1, 1])) == pytest.approx(7 / 24)


def test_matches_literal_compute_ap_on_random_rankings() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        flags = rng.random(n) < rng.random()
        if not flags.any():
            flags[rng.integers(n)] = True
        ranks = np.flatnonzero(flags).tolist()
        assert average_precision_ranked(flags) == pytest.approx(_reference_compute_ap(ranks, len(ranks)))


def test_unretrieved_positives_count_as_missing_area() -> None:
    assert average_precision_from_ranks([0], n_positives=2) == pytest.approx(0.5)


def test_scores_are_sorted_descending_and_ties_keep_database_order() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.5])
    positives = np.array([True, False, False, True])
    assert ranked_positive_flags(scores, positives).tolist() == [False, False, True, True]
    assert average_precision(scores, positives) == pytest.approx(7 / 24)


def test_map_is_vectorised_mean_over_queries_with_positives() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.1, 0.0],  # positives 0,1 first -> 1
            [0.9, 0.8, 0.1, 0.0],  # positives 2,3 last -> 7/24
            [0.4, 0.3, 0.2, 0.1],  # no positive -> NaN, ignored
        ]
    )
    positives = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    aps = average_precisions(scores, positives)
    assert aps[:2] == pytest.approx([1.0, 7 / 24])
    assert np.isnan(aps[2])
    assert mean_average_precision(scores, positives) == pytest.approx((1 + 7 / 24) / 2)
    with pytest.raises(ValueError):
        mean_average_precision(scores[2:], positives[2:])


def test_large_batches_are_chunked_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    import retrieval.engine.metrics as metrics

    rng = np.random.default_rng(1)
    scores = rng.standard_normal((37, 50))
    positives = rng.random((37, 50)) < 0.2
    positives[:, 0] = True
    whole = average_precisions(scores, positives)
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", 120)  # forces chunks of 2 queries
    np.testing.assert_allclose(average_precisions(scores, positives), whole)
    per_row = [average_precision(s, p) for s, p in zip(scores, positives)]
    np.testing.assert_allclose(whole, per_row)


def test_precision_and_recall_at_k() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positives = np.array([True, False, True, False, True])
    assert precision_at_k(scores, positives, 1) == pytest.approx(1.0)
    assert precision_at_k(scores, positives, 3) == pytest.approx(2 / 3)
    assert recall_at_k(scores, positives, 3) == pytest.approx(2 / 3)
    assert recall_at_k(scores, positives, 5) == pytest.approx(1.0)
    assert precision_at_k(scores, positives, 10) == pytest.approx(3 / 10)  # k larger than N

    batch_p = precision_at_k(np.stack([scores, -scores]), np.stack([positives, positives]), 2)
    assert batch_p.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError):
        precision_at_k(scores, positives, 0)


# ---------------------------------------------------------------------------- score dtypes


def test_unsigned_integer_scores_rank_descending() -> None:
    # argsort(-s) on unsigned integers wraps (-3 becomes 2**64 - 3): the best item ranked last.
    scores = np.array([3, 2, 1, 0], dtype=np.uint8)
    positives = np.array([True, False, False, False])
    assert average_precision(scores, positives) == 1.0
    assert average_precision(scores.astype(np.uint64), positives) == 1.0
    assert ranked_positive_flags(scores, positives).tolist() == [True, False, False, False]
    assert precision_at_k(scores, positives, 1) == 1.0


def test_boolean_scores_rank_true_first() -> None:
    scores = np.array([False, True, False, True])
    positives = np.array([False, True, False, False])
    # True items first (database order among equals): positive at rank 0.
    assert average_precision(scores, positives) == 1.0
    assert average_precision(~scores, positives) == pytest.approx((0 + 1 / 3) / 2)


def test_nan_scores_are_refused_with_the_query_named() -> None:
    scores = np.array([[0.3, 0.2, 0.1], [0.5, np.nan, 0.1]])
    positives = np.array([[True, False, False], [False, True, False]])
    with pytest.raises(ValueError, match=r"NaN.*query 1"):
        average_precisions(scores, positives)
    with pytest.raises(ValueError, match="NaN"):
        average_precision(scores[1], positives[1])
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(scores, positives, 2)
