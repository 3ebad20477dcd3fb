"""Precision-recall curves: interpolated precision on planted rankings (exact values), the curve
of each method of the comparison table, and the PNG they are drawn in."""

import numpy as np
import pytest
from PIL import Image

from retrieval.engine.metrics import RECALL_LEVELS, interpolated_precision
from retrieval.engine.pr_plot import SIZE, save_pr_curves
from retrieval.engine.train import FeatureSet, compare_methods, precision_recall_curves


def test_interpolated_precision_is_the_best_precision_at_or_beyond_each_recall() -> None:
    levels = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    # Positives at ranks 0 and 2 (of 4): precision 1 at recall 1/2, 2/3 at recall 1.
    assert interpolated_precision(np.array([4.0, 3, 2, 1]), np.array([1, 0, 1, 0]), levels).tolist() == [
        1.0, 1.0, 1.0, 2 / 3, 2 / 3]
    # Positives at ranks 1, 2 and 5 (of 6): 1/2, 2/3, 3/6 at recalls 1/3, 2/3, 1. The best
    # precision from recall 1/3 on is 2/3 (at rank 2), not the 1/2 where 1/3 is reached.
    scores = np.array([6.0, 5, 4, 3, 2, 1])
    got = interpolated_precision(scores, np.array([0, 1, 1, 0, 0, 1]), np.array([0.0, 0.3, 1 / 3, 0.5, 2 / 3, 0.7, 1.0]))
    assert got.tolist() == [2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 0.5, 0.5]
    # Rows are queries; ranking is by score, not by position; a query without positives is NaN.
    both = interpolated_precision(np.array([[1.0, 2, 3], [3.0, 2, 1]]), np.array([[1, 0, 0], [0, 0, 0]]), levels)
    assert both[0].tolist() == [1 / 3] * 5 and np.isnan(both[1]).all()
    with pytest.raises(ValueError, match="recall levels"):
        interpolated_precision(scores, np.ones(6), np.array([1.5]))


def _planted_features() -> FeatureSet:
    """Two categories of two photos, one proxy each. Text only ranks category 0 as
    [hit, miss, hit, miss] and category 1 perfectly; the vision features (and the fusion at
    λ=0.5) rank both perfectly."""
    vlm = np.array([[1.0, 0.0], [0.6, 0.5], [0.8, 0.6], [0.0, 1.0]])
    vision = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    return FeatureSet(proxy_features=np.eye(2)[:, None, :], text_features=np.eye(2), category_names=["a", "b"],
                      db_vlm=vlm, db_vision=vision, db_labels=[0, 0, 1, 1])


def test_each_method_of_the_table_gets_its_category_averaged_curve() -> None:
    features = _planted_features()
    curves = precision_recall_curves(features)
    table = compare_methods(features)
    # One curve per row that has a value, with the table's labels (no network: no 4th curve).
    assert [label for label, _ in curves] == [label for label, value in table if value is not None] == [
        "text only (λ=0)", "proxies only (mean, λ=1)", "text + mean proxies (λ=0.50)"]
    text_only = np.where(RECALL_LEVELS <= 0.5, 1.0, (2 / 3 + 1.0) / 2)
    np.testing.assert_allclose(curves[0][1], text_only, rtol=0, atol=1e-15)
    for _, precision in curves[1:]:
        assert precision.tolist() == [1.0] * len(RECALL_LEVELS)
    # Held-out categories only: category 0's own curve.
    (_, only_a), *_ = precision_recall_curves(features, np.array([0]))
    np.testing.assert_allclose(only_a, np.where(RECALL_LEVELS <= 0.5, 1.0, 2 / 3), rtol=0, atol=1e-15)


def test_the_curves_are_written_as_a_png_of_the_plot_size(tmp_path) -> None:
    features = _planted_features()
    path = save_pr_curves(tmp_path / "reports" / "pr.png", precision_recall_curves(features), "planted",
                          maps=dict(compare_methods(features)))
    assert path == tmp_path / "reports" / "pr.png"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert (image.format, image.size, image.mode) == ("PNG", SIZE, "RGB")
        pixels = np.asarray(image)
    # The first curve's colour (#2357c6) is drawn: the lines are there, not only the axes.
    assert np.all(pixels == (0x23, 0x57, 0xC6), axis=-1).sum() > 200
