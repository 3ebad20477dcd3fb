"""The `paper` architecture against a replica of the authors' module structure (tests/engine/authors_replica.py).

What must hold (issue 17): their state dict loads with strict=True, outputs agree to 1e-6 for
K = 4 and 10 and widths 384 and 1024, their checkpoint format is read and checked, and the fused
scores of their inference equal the product's with the matching text convention.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrieval.engine.aggregator import (
    AggregatorConfig,
    PaperAggregatorNet,
    aggregate,
    build_aggregator,
    load_aggregator,
    read_aggregator_metadata,
    save_aggregator,
)
from retrieval.engine.authors_checkpoint import AuthorsCheckpointError, paper_aggregator_from_authors
from retrieval.engine.fusion import photo_vectors, query_vectors
from retrieval.engine.prompts import ensemble_templates
from tests.engine.authors_replica import authors_fused_scores, authors_model, save_authors_checkpoint


def _trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every weight away from its init, as training would (the init's out-proj is ~0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _unit_proxies(batch: int, k: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, k, dim, generator=gen), dim=-1)


@pytest.mark.parametrize("dim", [384, 1024])
def test_authors_state_dict_loads_strictly_and_same_seed_gives_their_init(dim: int) -> None:
    torch.manual_seed(11)
    theirs = authors_model(dim)
    torch.manual_seed(11)
    ours = PaperAggregatorNet(dim)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, atol=0, rtol=0, msg=name)
    result = ours.load_state_dict(_trained_like(theirs, 1).state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_init_is_theirs_tied_query_key_zero_biases_small_output_projection() -> None:
    torch.manual_seed(0)
    net = PaperAggregatorNet(64)
    first, second = net.self_attn.layers
    w = first.in_proj_weight
    torch.testing.assert_close(w[64:128], w[:64])
    assert not torch.equal(w[128:], w[:64])  # the value rows are drawn on their own
    torch.testing.assert_close(second.in_proj_weight, w)  # one layer copied into both
    assert second.in_proj_weight.data_ptr() != w.data_ptr()  # copies, not shared parameters
    for attention in (net.attn_layer, first, second):
        assert not attention.in_proj_bias.any() and not attention.out_proj.bias.any()
        assert float(attention.out_proj.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert not torch.equal(first.out_proj.weight, second.out_proj.weight)  # redrawn per layer
    assert net.lam() == 0.5 and net.lamda.shape == (1,)
    assert net.config.attention_dropout == 0.1 and first.dropout == 0.1


@pytest.mark.parametrize("dim", [384, 1024])
@pytest.mark.parametrize("k", [4, 10])
def test_outputs_equal_the_authors_network(dim: int, k: int) -> None:
    torch.manual_seed(dim + k)
    theirs = _trained_like(authors_model(dim), seed=k)
    ours = PaperAggregatorNet(dim)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    proxies = _unit_proxies(3, k, dim, seed=k)
    with torch.no_grad():
        q_theirs, lam_theirs = theirs(proxies)
        q_ours = ours(proxies)
    assert (q_ours - q_theirs).abs().max() <= 1e-6
    assert ours.lam() == pytest.approx(float(lam_theirs), abs=1e-7)
    # Sensitive: the untrained mean is far from the trained network's output.
    assert (F.normalize(proxies.mean(dim=1), dim=-1) - q_theirs).abs().max() > 1e-2


def test_mask_equals_dropping_the_proxies() -> None:
    torch.manual_seed(0)
    net = _trained_like(PaperAggregatorNet(32), seed=2)
    g = _unit_proxies(2, 5, 32, seed=3)
    mask = torch.tensor([[True, False, True, True, False], [True] * 5])
    with torch.no_grad():
        masked = net(g, mask)
        dropped = net(g[:1, [0, 2, 3]])
        unmasked = net(g)
    torch.testing.assert_close(masked[0], dropped[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(masked[1], unmasked[1], atol=1e-6, rtol=0)
    assert (masked[0] - unmasked[0]).abs().max() > 1e-4


def test_attention_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    net = _trained_like(PaperAggregatorNet(32, attention_dropout=0.5), seed=1)
    g = _unit_proxies(4, 6, 32, seed=5)
    with torch.no_grad():
        reference = net.eval()(g)
        torch.testing.assert_close(net(g), reference, atol=0, rtol=0)
        net.train()
        torch.manual_seed(1)
        a = net(g)
        torch.manual_seed(2)
        b = net(g)
    assert (a - b).abs().max() > 1e-3 and (a - reference).abs().max() > 1e-3


def test_safetensors_round_trip_dispatches_on_the_architecture(tmp_path) -> None:
    torch.manual_seed(0)
    net = _trained_like(PaperAggregatorNet(48, layers=3, vision_model="org/vision"), seed=4)
    path = tmp_path / "paper.safetensors"
    save_aggregator(net, path)
    assert '"architecture": "paper"' in read_aggregator_metadata(path)["config"]
    loaded = load_aggregator(path)
    assert isinstance(loaded, PaperAggregatorNet) and loaded.config == net.config
    g = _unit_proxies(2, 4, 48, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(g), net(g), atol=0, rtol=0)
    assert loaded.lam() == net.lam()
    np.testing.assert_allclose(aggregate(g[0].numpy(), loaded), net(g[:1])[0].detach().numpy(), atol=1e-6)


def test_config_refuses_unknown_architectures_and_bad_dropout() -> None:
    assert isinstance(build_aggregator(AggregatorConfig(8, architecture="paper")), PaperAggregatorNet)
    with pytest.raises(ValueError, match="unknown aggregator architecture 'transformer'"):
        AggregatorConfig(8, architecture="transformer")
    with pytest.raises(ValueError, match="attention_dropout"):
        AggregatorConfig(8, attention_dropout=1.0)


# ---------------------------------------------------------------------------- their checkpoint file


def test_their_checkpoint_file_loads_for_the_matching_width(tmp_path) -> None:
    torch.manual_seed(3)
    theirs = _trained_like(authors_model(384), seed=8)
    path = tmp_path / "model.pth"
    save_authors_checkpoint(theirs, path)
    assert next(iter(torch.load(path, weights_only=True))).startswith("module.")  # as inf.py loads it

    net = paper_aggregator_from_authors(path, vision_dim=384, vision_model="org/vision-384")
    assert net.config.vision_model == "org/vision-384" and net.config.layers == 2
    g = _unit_proxies(2, 10, 384, seed=9)
    with torch.no_grad():
        assert (net(g) - theirs(g)[0]).abs().max() <= 1e-6
    # An unwrapped state dict is the same network.
    torch.save(theirs.state_dict(), tmp_path / "plain.pth")
    unwrapped = paper_aggregator_from_authors(tmp_path / "plain.pth", vision_dim=384)
    torch.testing.assert_close(unwrapped.state_dict(), net.state_dict(), atol=0, rtol=0)


def test_their_checkpoint_is_refused_for_another_width_or_another_network(tmp_path) -> None:
    path = tmp_path / "model.pth"
    save_authors_checkpoint(authors_model(384), path)
    with pytest.raises(AuthorsCheckpointError, match=r"384-d vision features, but org/v's features are 1024-d"):
        paper_aggregator_from_authors(path, vision_dim=1024, vision_model="org/v")

    state = authors_model(64).state_dict()
    del state["attn_layer.in_proj_bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(AuthorsCheckpointError, match=r"missing \['attn_layer.in_proj_bias'\]"):
        paper_aggregator_from_authors(tmp_path / "partial.pth", vision_dim=64)

    state = authors_model(64).state_dict()
    state["self_attn.layers.1.out_proj.weight"] = torch.zeros(64, 32)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(AuthorsCheckpointError, match=r"self_attn.layers.1.out_proj.weight \(64, 32\)"):
        paper_aggregator_from_authors(tmp_path / "shape.pth", vision_dim=64)

    state = authors_model(64).state_dict()
    state["lamda"] = torch.tensor([float("nan")])
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(AuthorsCheckpointError, match="non-finite weights in lamda"):
        paper_aggregator_from_authors(tmp_path / "nan.pth", vision_dim=64)

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(AuthorsCheckpointError, match="weights_only=True"):
        paper_aggregator_from_authors(tmp_path / "notes.pth", vision_dim=64)
    torch.save({"epoch": torch.tensor(3)}, tmp_path / "other.pth")
    with pytest.raises(AuthorsCheckpointError, match="not the authors' aggregator"):
        paper_aggregator_from_authors(tmp_path / "other.pth", vision_dim=64)


# ---------------------------------------------------------------------------- their inference


def _planted_features(seed: int, queries: int = 6, templates: int = 8, k: int = 10, dv: int = 64, dt: int = 48):
    """Unit template embeddings that disagree by a per-query amount, proxies, photo vectors."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((queries, 1, dt))
    spread = rng.uniform(0.2, 2.0, (queries, 1, 1))
    per_template = centre + spread * rng.standard_normal((queries, templates, dt))
    per_template /= np.linalg.norm(per_template, axis=-1, keepdims=True)
    proxies = rng.standard_normal((queries, k, dv))
    proxies /= np.linalg.norm(proxies, axis=-1, keepdims=True)
    n = 200
    vlm = rng.standard_normal((n, dt))
    vision = rng.standard_normal((n, dv))
    return (per_template.astype(np.float32), proxies.astype(np.float32),
            (vlm / np.linalg.norm(vlm, axis=1, keepdims=True)).astype(np.float32),
            (vision / np.linalg.norm(vision, axis=1, keepdims=True)).astype(np.float32))


@pytest.mark.parametrize("text_mean", ["plain", "normalized"])
def test_fused_scores_equal_the_authors_inference(tmp_path, text_mean: str) -> None:
    per_template, proxies, vlm, vision = _planted_features(seed=1)
    torch.manual_seed(4)
    theirs = _trained_like(authors_model(proxies.shape[-1]), seed=12)
    with torch.no_grad():
        theirs.lamda.fill_(0.4)  # λ ≈ 0.6, a trained-like value
    save_authors_checkpoint(theirs, tmp_path / "model.pth")
    expected = authors_fused_scores(theirs, per_template, proxies, vlm, vision,
                                    renormalise_text=text_mean == "normalized").T  # (Q, N)

    net = paper_aggregator_from_authors(tmp_path / "model.pth", vision_dim=proxies.shape[-1])
    t = ensemble_templates(per_template, text_mean)
    u = query_vectors(t, aggregate(proxies, net), net.lam())
    ours = u @ photo_vectors(vlm, vision).T
    assert np.abs(ours - expected).max() <= 1e-6
    # The conventions differ measurably on these templates: the test can tell them apart.
    other = "normalized" if text_mean == "plain" else "plain"
    u_other = query_vectors(ensemble_templates(per_template, other), aggregate(proxies, net), net.lam())
    assert np.abs(u_other @ photo_vectors(vlm, vision).T - expected).max() > 1e-2
