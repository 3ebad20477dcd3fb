"""Training: feature files, category split, determinism, and a run that beats mean pooling."""

import json
import time

import numpy as np
import pytest
import torch

from retrieval.engine.aggregator import load_aggregator, read_aggregator_metadata
from retrieval.engine.train import (
    FeatureSet,
    TrainConfig,
    compare_methods,
    format_table,
    load_features,
    main,
    save_features,
    split_categories,
    subset_categories,
    train_aggregator,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(seed: int = 0, n_cat: int = 60, k: int = 6, off: float = 0.5, per_cat: int = 12) -> FeatureSet:
    """Categories with centres in both spaces, a text modality gap, and junk proxies.

    Each proxy is, with probability ``off``, a junk image unrelated to its category; the others
    sit near the category centre. Mean pooling is hurt by the junk; an attention over the
    proxies can learn to ignore it.
    """
    rng = np.random.default_rng(seed)
    dv, dt, dz = 32, 24, 16
    z = _unit(rng.standard_normal((n_cat, dz)))
    p_v, p_t = rng.standard_normal((dz, dv)), rng.standard_normal((dz, dt))
    labels = np.repeat(np.arange(n_cat), per_cat)
    z_x = z[labels] + 0.5 * rng.standard_normal((len(labels), dz)) / np.sqrt(dz)
    db_vision = _unit(z_x @ p_v + 0.8 * rng.standard_normal((len(labels), dv)))
    db_vlm = _unit(z_x @ p_t + 0.8 * rng.standard_normal((len(labels), dt)))
    gap = 2.0 * _unit(rng.standard_normal(dt))
    text = _unit(gap + (z + 0.8 * rng.standard_normal((n_cat, dz)) / np.sqrt(dz)) @ p_t)
    z_g = z[:, None] + 0.4 * rng.standard_normal((n_cat, k, dz)) / np.sqrt(dz)
    junk = rng.standard_normal((n_cat, k, dz))
    z_g = np.where((rng.random((n_cat, k)) < off)[..., None], junk, z_g)
    proxies = _unit(z_g @ p_v + 0.5 * rng.standard_normal((n_cat, k, dv)))
    names = np.array([f"cat_{i}" for i in range(n_cat)])
    return FeatureSet(proxies, text, names, db_vlm, db_vision, labels, {"vision_model": "planted/v"})


def test_feature_file_round_trip(tmp_path) -> None:
    fs = planted(n_cat=5, per_cat=3)
    path = tmp_path / "f.npz"
    save_features(path, fs)
    back = load_features(path)
    for key in ("proxy_features", "text_features", "db_vlm", "db_vision", "db_labels"):
        np.testing.assert_array_equal(getattr(back, key), getattr(fs, key))
    assert back.category_names.tolist() == fs.category_names.tolist()
    assert back.metadata == {"vision_model": "planted/v"}
    assert back.proxy_features.dtype == np.float32 and back.db_labels.dtype == np.int64


def test_inconsistent_feature_arrays_are_rejected() -> None:
    fs = planted(n_cat=4, per_cat=2)
    with pytest.raises(ValueError, match="db_vision"):
        FeatureSet(fs.proxy_features, fs.text_features, fs.category_names, fs.db_vlm, fs.db_vision[:-1], fs.db_labels)
    with pytest.raises(ValueError, match="db_labels"):
        FeatureSet(fs.proxy_features, fs.text_features, fs.category_names, fs.db_vlm, fs.db_vision, fs.db_labels + 4)


def test_category_split_is_seeded_disjoint_and_complete() -> None:
    tr, va = split_categories(20, 0.25, seed=3)
    tr2, va2 = split_categories(20, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(20))
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, split_categories(20, 0.25, seed=4)[1])
    assert len(split_categories(3, 0.01, 0)[1]) == 1  # never an empty side
    with pytest.raises(ValueError):
        split_categories(1, 0.5, 0)


def test_subset_categories_renumbers_labels() -> None:
    fs = planted(n_cat=6, per_cat=2)
    sub = subset_categories(fs, np.array([1, 4]))
    assert sub.category_names.tolist() == ["cat_1", "cat_4"]
    assert sub.db_labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(sub.db_vision, fs.db_vision[[2, 3, 8, 9]])


@pytest.fixture
def one_thread():
    """Tiny matrices: one intra-op thread is faster, especially on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_beats_mean_pooling_on_held_out_categories(one_thread) -> None:
    fs = planted()
    start = time.perf_counter()
    result = train_aggregator(fs, TrainConfig(val_fraction=0.3, epochs=15, patience=5, lr=1e-3, seed=0))
    elapsed = time.perf_counter() - start

    assert set(result.val_categories).isdisjoint(result.train_categories)
    rows = dict(compare_methods(fs, result.val_categories, None))
    mean_fused = rows["text + mean proxies (λ=0.50)"]
    assert result.baseline_val_map == pytest.approx(mean_fused)
    assert result.improved
    assert result.best_val_map > result.baseline_val_map + 0.02, (result.baseline_val_map, result.best_val_map)
    assert result.best_epoch >= 1
    # Training itself adds to what the tied-attention initialisation already gives.
    assert result.best_val_map > result.history[0].val_map
    assert elapsed < 15


def test_training_is_deterministic_and_cli_saves_best_network(tmp_path, capsys, one_thread) -> None:
    fs = planted(n_cat=20, per_cat=6)
    path = tmp_path / "f.npz"
    save_features(path, fs)
    cfg = TrainConfig(epochs=3, patience=3, seed=5)
    a, b = train_aggregator(fs, cfg), train_aggregator(fs, cfg)
    for (name, pa), pb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0, msg=name)

    out = tmp_path / "agg.safetensors"
    assert main([str(path), "--out", str(out), "--epochs", "3", "--patience", "3", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "| text + aggregator (learned λ=" in printed
    net = load_aggregator(out)
    assert net.config.vision_model == "planted/v"
    meta = read_aggregator_metadata(out)
    assert int(meta["best_epoch"]) == a.best_epoch
    assert len(json.loads(meta["train_categories"])) == len(a.train_categories)
    torch.testing.assert_close(net.w.detach(), a.net.w.detach(), atol=0, rtol=0)


def test_table_without_aggregator_says_so() -> None:
    fs = planted(n_cat=6, per_cat=3)
    rows = compare_methods(fs)
    assert [label for label, _ in rows][:3] == [
        "text only (λ=0)",
        "proxies only (mean, λ=1)",
        "text + mean proxies (λ=0.50)",
    ]
    assert rows[-1][1] is None
    assert "n/a: no trained aggregator" in format_table(rows)
    assert all(0.0 <= v <= 1.0 for _, v in rows[:3])


def test_proxy_dropout_keeps_one_proxy_per_category() -> None:
    from retrieval.engine.train import _dropout_mask

    gen = torch.Generator().manual_seed(0)
    assert _dropout_mask(torch.Size((4, 3)), 0.0, gen) is None
    mask = _dropout_mask(torch.Size((500, 3)), 0.9, gen)
    assert mask.shape == (500, 3) and mask.any(dim=1).all()
    assert 0.05 < mask.float().mean() < 0.6  # most proxies off, never a whole category


def test_paper_architecture_trains_with_its_recipe_and_the_cli_records_it(tmp_path, capsys, one_thread) -> None:
    from retrieval.engine.aggregator import PaperAggregatorNet

    fs = planted(n_cat=20, per_cat=6)
    fs.metadata["text_mean"] = "plain"
    path = tmp_path / "f.npz"
    save_features(path, fs)
    out = tmp_path / "paper.safetensors"
    argv = [str(path), "--out", str(out), "--epochs", "2", "--patience", "2", "--architecture", "paper"]
    assert main(argv) == 0
    assert "(paper architecture); saved" in capsys.readouterr().out
    net = load_aggregator(out)
    assert isinstance(net, PaperAggregatorNet)
    assert net.config.attention_dropout == 0.1  # the authors' recipe unless told otherwise
    assert read_aggregator_metadata(out)["text_mean"] == "plain"

    assert main(argv + ["--attention-dropout", "0"]) == 0
    assert load_aggregator(out).config.attention_dropout == 0.0
    with pytest.raises(SystemExit):
        main([str(path), "--out", str(out), "--architecture", "transformer"])


def test_training_from_an_initial_network_leaves_it_untouched(one_thread) -> None:
    from retrieval.engine.aggregator import PaperAggregatorNet

    fs = planted(n_cat=20, per_cat=6)
    torch.manual_seed(0)
    initial = PaperAggregatorNet(fs.proxy_features.shape[-1], vision_model="planted/v").eval()
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    result = train_aggregator(fs, TrainConfig(epochs=2, patience=2, architecture="cletir"), initial=initial)
    assert isinstance(result.net, PaperAggregatorNet)  # the initial network's architecture wins
    for name, value in initial.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=0, rtol=0)
    changed = [n for n, v in result.net.state_dict().items() if not torch.equal(v, before[n])]
    assert "self_attn.layers.0.in_proj_weight" in changed
    assert "attn_layer.in_proj_weight" not in changed  # the unused template gets no gradient
    with pytest.raises(ValueError, match="initial network is 8 wide"):
        train_aggregator(fs, TrainConfig(epochs=1), initial=PaperAggregatorNet(8))
