"""The query plan (retrieval.search.plan) on planted vectors, without a database: every mode
gives the query vector METHOD.md describes, computed here by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.engine.aggregator import AggregatorNet
from retrieval.search.plan import MEAN, NONE, TRAINED, QueryInputs, plan_query

VLM, VISION = 6, 8


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def planted():
    rng = np.random.default_rng(3)
    t = unit(rng.standard_normal(VLM))
    proxies = np.stack([unit(rng.standard_normal(VISION)) for _ in range(4)])
    examples = np.stack([unit(rng.standard_normal(VISION)) for _ in range(2)])
    negatives = np.stack([unit(rng.standard_normal(VISION)) for _ in range(3)])
    return t, proxies, examples, negatives


def inputs(**fields) -> QueryInputs:
    return QueryInputs(vlm_dim=VLM, vision_dim=VISION, **fields)


def fused(t, q, lam) -> np.ndarray:
    return np.concatenate([(1 - lam) * np.asarray(t, np.float64), lam * np.asarray(q, np.float64)])


def test_text_only_is_the_text_half_alone(planted):
    t, *_ = planted
    plan = plan_query(inputs(text_vector=t))
    assert (plan.lam, plan.aggregation, len(plan.references)) == (0.0, NONE, 0)
    np.testing.assert_allclose(plan.u, fused(t, np.zeros(VISION), 0.0), atol=1e-7)


def test_text_and_proxies_fuse_the_mean_of_the_proxies_with_the_default_or_chosen_lambda(planted):
    t, proxies, *_ = planted
    plan = plan_query(inputs(text_vector=t, proxies=proxies), default_lambda=0.3)
    assert (plan.lam, plan.aggregation) == (0.3, MEAN)
    np.testing.assert_allclose(plan.u, fused(t, unit(proxies.mean(axis=0)), 0.3), atol=1e-6)
    np.testing.assert_array_equal(plan.references, proxies)

    chosen = plan_query(inputs(text_vector=t, proxies=proxies, lambda_override=0.8), default_lambda=0.3)
    assert chosen.lam == 0.8
    np.testing.assert_allclose(chosen.u, fused(t, unit(proxies.mean(axis=0)), 0.8), atol=1e-6)


def test_switched_off_proxies_are_left_out_and_none_left_means_text_only(planted):
    t, proxies, *_ = planted
    kept = np.array([True, False, True, False])
    plan = plan_query(inputs(text_vector=t, proxies=proxies, proxy_enabled=kept))
    np.testing.assert_allclose(plan.u, fused(t, unit(proxies[kept].mean(axis=0)), 0.5), atol=1e-6)
    np.testing.assert_array_equal(plan.references, proxies[kept])

    off = plan_query(inputs(text_vector=t, proxies=proxies, proxy_enabled=np.zeros(4, bool), lambda_override=0.9))
    assert (off.lam, off.aggregation) == (0.0, NONE)
    np.testing.assert_allclose(off.u, fused(t, np.zeros(VISION), 0.0), atol=1e-7)


def test_examples_join_the_proxies_and_alone_make_a_search_by_example(planted):
    t, proxies, examples, _ = planted
    both = plan_query(inputs(text_vector=t, proxies=proxies, examples=examples))
    np.testing.assert_allclose(both.u, fused(t, unit(np.concatenate([proxies, examples]).mean(axis=0)), 0.5), atol=1e-6)

    by_example = plan_query(inputs(examples=examples, lambda_override=0.2))
    assert (by_example.lam, by_example.aggregation) == (1.0, MEAN)  # no text branch, whatever λ asked
    np.testing.assert_allclose(by_example.u, fused(np.zeros(VLM), unit(examples.mean(axis=0)), 1.0), atol=1e-6)


def test_negatives_are_subtracted_from_the_image_query(planted):
    t, proxies, _, negatives = planted
    plan = plan_query(inputs(text_vector=t, proxies=proxies, negatives=negatives), negative_weight=0.5)
    q = unit(proxies.mean(axis=0)) - 0.5 * unit(negatives.mean(axis=0))
    np.testing.assert_allclose(plan.u, fused(t, unit(q), 0.5), atol=1e-6)
    # Negatives alone move nothing: there is no image query to push away from.
    alone = plan_query(inputs(text_vector=t, negatives=negatives))
    assert alone.aggregation == NONE and alone.lam == 0.0


def test_a_trained_network_aggregates_and_sets_lambda_unless_overridden(planted):
    t, proxies, *_ = planted
    torch.manual_seed(0)
    net = AggregatorNet(VISION)
    with torch.no_grad():
        net.w.fill_(1.0)
        q = net(torch.from_numpy(proxies)[None], None)[0].numpy()
    plan = plan_query(inputs(text_vector=t, proxies=proxies), net, default_lambda=0.3)
    lam = 1 / (1 + math.exp(-1.0))
    assert plan.aggregation == TRAINED and plan.lam == pytest.approx(lam)
    np.testing.assert_allclose(plan.u, fused(t, q, lam), atol=1e-5)
    assert plan_query(inputs(text_vector=t, proxies=proxies, lambda_override=0.25), net).lam == 0.25
