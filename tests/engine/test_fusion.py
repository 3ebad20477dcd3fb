"""Fusion: the concatenated inner product equals the λ-mix of the two similarities."""

import numpy as np
import pytest

from retrieval.engine.fusion import fused_scores, photo_vectors, query_vector, query_vectors, score_parts


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5, 0.731, 1.0])
def test_inner_product_equals_fused_score(lam: float) -> None:
    rng = np.random.default_rng(0)
    a, b, n = 48, 32, 50
    t, q = _unit(rng, a), _unit(rng, b)
    i_x, v_x = _unit(rng, n, a), _unit(rng, n, b)

    u = query_vector(t, q, lam)
    e = photo_vectors(i_x, v_x)
    expected = (1 - lam) * (i_x.astype(np.float64) @ t) + lam * (v_x.astype(np.float64) @ q)

    assert u.shape == (a + b,) and u.dtype == np.float32
    assert e.shape == (n, a + b) and e.dtype == np.float32
    np.testing.assert_allclose(e @ u, expected, atol=1e-5)
    np.testing.assert_allclose(u[:a], (1 - lam) * t, atol=1e-7)
    np.testing.assert_allclose(u[a:], lam * q, atol=1e-7)


def test_score_parts_split_the_fused_score() -> None:
    rng = np.random.default_rng(1)
    a, b = 16, 24
    texts, proxies = _unit(rng, 3, a), _unit(rng, 3, b)
    i_x, v_x = _unit(rng, 10, a), _unit(rng, 10, b)
    u = query_vectors(texts, proxies, 0.3)
    e = photo_vectors(i_x, v_x)

    fused, text_part, image_part = score_parts(u, e, a)
    assert fused.shape == text_part.shape == image_part.shape == (3, 10)
    np.testing.assert_allclose(fused, text_part + image_part, atol=1e-6)
    np.testing.assert_allclose(text_part, 0.7 * texts @ i_x.T, atol=1e-5)
    np.testing.assert_allclose(image_part, 0.3 * proxies @ v_x.T, atol=1e-5)
    np.testing.assert_allclose(fused, fused_scores(texts, proxies, 0.3, i_x, v_x), atol=1e-5)

    single = score_parts(u[1], e, a)
    assert single[0].shape == (10,)
    np.testing.assert_allclose(single[0], fused[1], atol=1e-6)


def test_extreme_lambdas_select_one_branch() -> None:
    rng = np.random.default_rng(2)
    t, q = _unit(rng, 2, 8), _unit(rng, 2, 6)
    i_x, v_x = _unit(rng, 5, 8), _unit(rng, 5, 6)
    np.testing.assert_allclose(fused_scores(t, q, 0.0, i_x, v_x), t @ i_x.T, atol=1e-6)
    np.testing.assert_allclose(fused_scores(t, q, 1.0, i_x, v_x), q @ v_x.T, atol=1e-6)


def test_invalid_inputs_are_rejected() -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError):
        query_vector(_unit(rng, 4), _unit(rng, 3), 1.5)
    with pytest.raises(ValueError):
        photo_vectors(_unit(rng, 3, 4), _unit(rng, 2, 3))
    with pytest.raises(ValueError):
        score_parts(_unit(rng, 7), _unit(rng, 2, 7), 7)
