"""Aggregation network: METHOD.md step 4, CLS-only updates, masks, λ, safetensors round-trip."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from retrieval.engine.aggregator import (
    AggregatorNet,
    aggregate,
    fusion_lambda,
    load_aggregator,
    read_aggregator_metadata,
    save_aggregator,
)

D, K = 16, 5


def _perturbed_net(seed: int = 0, layers: int = 2) -> AggregatorNet:
    """A network whose weights are all moved away from their (structured) initial values."""
    torch.manual_seed(seed)
    net = AggregatorNet(D, layers=layers, vision_model="test/vision")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def _proxies(batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, K, D, generator=g), dim=-1)


def _reference(net: AggregatorNet, g: torch.Tensor, update_proxies: bool = False) -> torch.Tensor:
    """Hand-written METHOD.md step 4 from the raw weights, one query at a time.

    With ``update_proxies`` it instead behaves like a plain transformer layer stack, where the
    proxy tokens are updated too; used to show the test can tell the two apart.
    """
    outs = []
    for tokens_g in g:
        cls = tokens_g.mean(dim=0)
        proxies = tokens_g.clone()
        for layer in net.layers:
            x = torch.cat([cls[None], proxies])  # (1+K, D)
            n = F.layer_norm(x, (D,), layer.norm.weight, layer.norm.bias, layer.norm.eps)
            q = n @ layer.q_proj.weight.T + layer.q_proj.bias
            k = n @ layer.k_proj.weight.T + layer.k_proj.bias
            v = x @ layer.v_proj.weight.T + layer.v_proj.bias
            attn = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # every token's attention row
            new = x + (attn @ v) @ layer.out_proj.weight.T + layer.out_proj.bias
            cls = new[0]
            if update_proxies:
                proxies = new[1:]
        outs.append(cls / cls.norm())
    return torch.stack(outs)


def test_output_shape_and_unit_norm() -> None:
    net = _perturbed_net()
    q = net(_proxies())
    assert q.shape == (3, D)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3))


def test_forward_equals_hand_computed_reference_with_fixed_proxies() -> None:
    net = _perturbed_net()
    g = _proxies()
    g_before = g.clone()
    with torch.no_grad():
        out = net(g)
        expected = _reference(net, g)
        transformer_like = _reference(net, g, update_proxies=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # The check is sensitive: updating the proxies between layers gives another answer.
    assert (out - transformer_like).abs().max() > 1e-3
    torch.testing.assert_close(g, g_before)  # inputs untouched


def test_layer_returns_only_the_cls_token() -> None:
    net = _perturbed_net()
    g = _proxies()
    cls = g.mean(dim=1)
    new_cls = net.layers[0](cls, g)
    assert new_cls.shape == cls.shape
    # Perturbing a layer's projections changes the CLS but cannot reach the proxy tokens,
    # which the second layer reads unchanged: its inputs are exactly (new_cls, g).
    with torch.no_grad():
        net.layers[0].v_proj.weight.add_(0.5)
        out = net(g)
        manual = F.normalize(net.layers[1](net.layers[0](cls, g), g), dim=-1)
    torch.testing.assert_close(out, manual)


def test_query_and_key_projections_start_tied_then_train_separately() -> None:
    torch.manual_seed(0)
    net = AggregatorNet(D)
    for layer in net.layers:
        torch.testing.assert_close(layer.q_proj.weight, layer.k_proj.weight)
        torch.testing.assert_close(layer.q_proj.bias, layer.k_proj.bias)
        assert layer.q_proj.weight is not layer.k_proj.weight
    # Break the symmetry of the untrained first step with a non-trivial value path.
    with torch.no_grad():
        for layer in net.layers:
            layer.out_proj.weight.add_(0.2 * torch.randn(D, D))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    target = F.normalize(torch.randn(3, D), dim=-1)
    loss = -(net(_proxies()) * target).sum()
    loss.backward()
    opt.step()
    assert not torch.allclose(net.layers[0].q_proj.weight, net.layers[0].k_proj.weight)


def test_untrained_output_is_close_to_the_mean() -> None:
    torch.manual_seed(0)
    net = AggregatorNet(D).eval()
    centre = F.normalize(torch.randn(1, 1, D), dim=-1)
    g = F.normalize(centre + 0.5 * torch.randn(4, K, D) / math.sqrt(D), dim=-1)
    with torch.no_grad():
        cos = (net(g) * F.normalize(g.mean(dim=1), dim=-1)).sum(-1)
    assert cos.min() > 0.98


def test_mask_equals_dropping_the_proxies() -> None:
    net = _perturbed_net()
    g = _proxies(batch=2)
    mask = torch.tensor([[True, False, True, True, False], [True, True, True, True, True]])
    with torch.no_grad():
        masked = net(g, mask)
        dropped_0 = net(g[0:1, [0, 2, 3]])
        # Changing a switched-off proxy changes nothing (it is out of the mean and the keys).
        g2 = g.clone()
        g2[0, 1] = -g2[0, 1]
        masked_changed = net(g2, mask)
        unmasked = net(g)
    torch.testing.assert_close(masked[0], dropped_0[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(masked, masked_changed)
    torch.testing.assert_close(masked[1], unmasked[1])
    assert (masked[0] - unmasked[0]).abs().max() > 1e-4
    with pytest.raises(ValueError):
        net(g, torch.zeros(2, K, dtype=torch.bool))


def test_permutation_of_proxies_does_not_change_the_query() -> None:
    net = _perturbed_net()
    g = _proxies()
    with torch.no_grad():
        torch.testing.assert_close(net(g), net(g[:, torch.randperm(K)]), atol=1e-6, rtol=1e-5)


def test_lambda_is_sigmoid_of_w_starting_at_one_half() -> None:
    net = AggregatorNet(D)
    assert float(net.w.detach()) == 0.0
    assert net.lam() == pytest.approx(0.5)
    assert fusion_lambda(net, default=0.9) == pytest.approx(0.5)
    with torch.no_grad():
        net.w.fill_(1.0)
    assert fusion_lambda(net) == pytest.approx(1 / (1 + math.exp(-1)))
    assert fusion_lambda(None, default=0.3) == 0.3


def test_save_load_round_trip(tmp_path) -> None:
    net = _perturbed_net(seed=3, layers=3)
    with torch.no_grad():
        net.w.fill_(0.7)
    path = tmp_path / "agg.safetensors"
    save_aggregator(net, path, extra_metadata={"val_map": "0.5"})

    meta = read_aggregator_metadata(path)
    assert meta["val_map"] == "0.5"
    assert '"vision_model": "test/vision"' in meta["config"]
    loaded = load_aggregator(path)
    assert loaded.config == net.config
    assert loaded.lam() == pytest.approx(net.lam())
    g = _proxies()
    with torch.no_grad():
        torch.testing.assert_close(loaded(g), net(g), atol=0, rtol=0)


def test_load_rejects_foreign_safetensors(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="cletir-aggregator"):
        load_aggregator(path)


def test_aggregate_mean_fallback_and_network_path() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((K, D)).astype(np.float32)
    mean = g.mean(axis=0)
    np.testing.assert_allclose(aggregate(g, None), mean / np.linalg.norm(mean), atol=1e-6)

    mask = np.array([True, True, False, False, True])
    sub = g[mask].mean(axis=0)
    np.testing.assert_allclose(aggregate(g, None, mask), sub / np.linalg.norm(sub), atol=1e-6)
    with pytest.raises(ValueError):
        aggregate(g, None, np.zeros(K, dtype=bool))

    net = _perturbed_net()
    q = aggregate(g, net, mask)
    assert q.shape == (D,) and q.dtype == np.float32
    with torch.no_grad():
        expected = net(torch.from_numpy(g)[None], torch.from_numpy(mask)[None])[0].numpy()
    np.testing.assert_allclose(q, expected, atol=1e-6)
    batch = aggregate(np.stack([g, g[::-1]]), net)
    assert batch.shape == (2, D)
    np.testing.assert_allclose(batch[0], aggregate(g, net), atol=1e-6)


def test_a_file_from_before_architectures_loads_as_cletirs_network(tmp_path) -> None:
    import json

    net = _perturbed_net(seed=2)
    path = tmp_path / "old.safetensors"
    # What save_aggregator wrote before the architecture option: no architecture, no dropout.
    old_config = {"dim": D, "layers": 2, "vision_model": "test/vision"}
    tensors = {name: t.detach().contiguous() for name, t in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "cletir-aggregator/1", "config": json.dumps(old_config)})
    loaded = load_aggregator(path)
    assert type(loaded) is AggregatorNet and loaded.config.architecture == "cletir"
    g = _proxies()
    with torch.no_grad():
        torch.testing.assert_close(loaded(g), net(g), atol=0, rtol=0)
