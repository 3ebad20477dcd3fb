"""evaluate: folder scanning, and the full pipeline on the tiny profile (evaluate -> train -> evaluate)."""

import numpy as np
import pytest
from PIL import Image

from retrieval.engine.aggregator import AggregatorNet
from retrieval.engine.evaluate import (
    check_aggregator,
    main,
    proxy_seeds,
    query_text,
    resolve_templates,
    scan_folder,
)
from retrieval.engine.pr_plot import SIZE
from retrieval.engine.train import load_features
from retrieval.engine.train import main as train_main

@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """evaluate writes its precision-recall curves to the current folder by default."""
    monkeypatch.chdir(tmp_path)


CATEGORIES = {"golden_retriever": (200, 160, 60), "red__sports_car": (200, 20, 20), "sea_turtle": (20, 120, 90)}


def _photo_folder(root, per_category: int = 3):
    """A labelled folder of small generated photos: a category colour plus seeded noise."""
    rng = np.random.default_rng(0)
    for name, colour in CATEGORIES.items():
        sub = root / name
        sub.mkdir(parents=True)
        for i in range(per_category):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(sub / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (root / "empty_category").mkdir()
    (root / "golden_retriever" / "notes.txt").write_text("not an image")
    return root


def test_query_text_and_seeds_and_templates() -> None:
    assert query_text("red__sports_car") == "red sports car"
    assert query_text(" sea_turtle ") == "sea turtle"
    assert proxy_seeds(7, 3) == [7, 8, 9]
    with pytest.raises(ValueError):
        proxy_seeds(0, 0)
    assert resolve_templates("all", "a photo of a {}.") is None
    assert resolve_templates("single", "a photo of a {}.") == ["a photo of a {}."]


def test_templates_from_a_file(tmp_path) -> None:
    path = tmp_path / "food.txt"
    path.write_text("a photo of {}, a type of food.\n", encoding="utf-8")
    assert resolve_templates(str(path), "a photo of a {}.") == ["a photo of {}, a type of food."]
    with pytest.raises(ValueError, match="'all', 'single' or a file of templates; no file"):
        resolve_templates(str(tmp_path / "missing.txt"), "a photo of a {}.")


def test_evaluate_encodes_the_text_with_a_template_file(tmp_path, tiny_model_dir, tiny_encoders, capsys) -> None:
    photos = _photo_folder(tmp_path / "photos", per_category=1)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na blurry photo of the {}.\n", encoding="utf-8")
    feats = tmp_path / "f.npz"
    args = [str(photos), "--profile", "tiny", "--k", "1", "--quiet", "--features-out", str(feats)]
    assert main(args + ["--templates", str(templates)]) == 0
    assert f"templates {templates}, text mean normalized" in capsys.readouterr().out
    fs = load_features(feats)
    assert fs.metadata["templates"] == ["a photo of a {}.", "a blurry photo of the {}."]
    assert fs.metadata["text_mean"] == "normalized"
    expected = tiny_encoders.encode_text(fs.category_names.tolist(), ["a photo of a {}.", "a blurry photo of the {}."])
    np.testing.assert_allclose(fs.text_features, expected, atol=1e-6)

    templates.write_text("a photo of a dog.\n", encoding="utf-8")
    with pytest.raises(SystemExit) as refused:
        main(args + ["--templates", str(templates)])
    assert refused.value.code == 2
    assert "line 1: template 'a photo of a dog.' has no {}" in capsys.readouterr().err


def test_scan_folder_labels_sorted_categories_and_skips_non_images(tmp_path) -> None:
    folder = scan_folder(_photo_folder(tmp_path))
    assert folder.categories == ["golden_retriever", "red__sports_car", "sea_turtle"]  # empty skipped
    assert folder.queries == ["golden retriever", "red sports car", "sea turtle"]
    assert len(folder.paths) == 9 and all(p.suffix in {".png", ".jpg"} for p in folder.paths)
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        scan_folder(tmp_path / "sea_turtle")  # images but no category sub-folders


def test_check_aggregator_refuses_other_vision_features() -> None:
    check_aggregator(AggregatorNet(8, vision_model="org/vision"), 8, "org/vision")
    check_aggregator(AggregatorNet(8), 8, "org/vision")  # unknown origin: only the width is checked
    with pytest.raises(ValueError, match="dim"):
        check_aggregator(AggregatorNet(8), 16, "org/vision")
    with pytest.raises(ValueError, match="trained on"):
        check_aggregator(AggregatorNet(8, vision_model="org/other"), 8, "org/vision")


def test_end_to_end_on_the_tiny_profile(tmp_path, tiny_model_dir, tiny_encoders, capsys) -> None:
    photos = _photo_folder(tmp_path / "photos")
    feats_path = tmp_path / "features.npz"
    args = [str(photos), "--profile", "tiny", "--k", "2", "--seed", "3", "--templates", "single", "--quiet"]

    assert main(args + ["--features-out", str(feats_path)]) == 0
    table = first_table = capsys.readouterr().out
    for row in ("text only (λ=0)", "proxies only (mean, λ=1)", "text + mean proxies (λ=0.50)"):
        assert f"| {row} | " in table
    assert "| text + aggregator (learned λ) | n/a: no trained aggregator |" in table
    # The curves beside the table: in the current folder unless --pr-curves says where.
    assert table.endswith(f"\nprecision-recall curves: {tmp_path / 'precision-recall.png'}\n")
    with Image.open(tmp_path / "precision-recall.png") as curves:
        assert (curves.format, curves.size) == ("PNG", SIZE)

    fs = load_features(feats_path)
    c, n = 3, 9
    assert fs.proxy_features.shape == (c, 2, tiny_encoders.vision_dim)
    assert fs.text_features.shape == (c, tiny_encoders.vlm_dim)
    assert fs.db_vlm.shape == (n, tiny_encoders.vlm_dim) and fs.db_vision.shape == (n, tiny_encoders.vision_dim)
    assert fs.category_names.tolist() == ["golden retriever", "red sports car", "sea turtle"]
    assert fs.db_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for arr in (fs.text_features, fs.db_vlm, fs.db_vision, fs.proxy_features):
        np.testing.assert_allclose(np.linalg.norm(arr, axis=-1), 1.0, atol=1e-5)
    assert fs.metadata["seeds"] == [3, 4] and fs.metadata["profile"] == "tiny"
    assert fs.metadata["vision_model"] == tiny_encoders.profile.vision
    # The photo features are exactly what the encoders give for those files.
    first = Image.open(photos / "golden_retriever" / "img0.jpg").convert("RGB")
    np.testing.assert_allclose(fs.db_vision[0], tiny_encoders.encode_vision_images([first])[0], atol=1e-5)

    # The feature file trains an aggregator, which evaluate then uses with its learned λ.
    agg = tmp_path / "agg.safetensors"
    assert train_main([str(feats_path), "--out", str(agg), "--epochs", "2", "--val-fraction", "0.34"]) == 0
    assert capsys.readouterr().out.endswith(f"\nprecision-recall curves: {tmp_path / 'agg-precision-recall.png'}\n")
    assert main(args + ["--aggregator", str(agg), "--pr-curves", str(tmp_path / "with-network.png")]) == 0
    table = capsys.readouterr().out
    assert table.endswith(f"\nprecision-recall curves: {tmp_path / 'with-network.png'}\n")
    with Image.open(tmp_path / "with-network.png") as curves:
        assert curves.size == SIZE
    assert "| text + aggregator (learned λ=" in table and "n/a" not in table
    assert "| proxies only (aggregator, λ=1) | " in table
    # Same folder, same seed: the same features, so the same first three rows.
    assert [line for line in table.splitlines() if "mean" in line or "text only" in line] == [
        line for line in first_table.splitlines() if "mean" in line or "text only" in line
    ]


def test_aggregator_for_another_encoder_is_refused(tmp_path, tiny_model_dir, tiny_encoders) -> None:
    from retrieval.engine.aggregator import save_aggregator

    photos = _photo_folder(tmp_path / "photos", per_category=1)
    path = tmp_path / "wrong.safetensors"
    save_aggregator(AggregatorNet(tiny_encoders.vision_dim, vision_model="someone/else"), path)
    with pytest.raises(ValueError, match="trained on"):
        main([str(photos), "--profile", "tiny", "--k", "1", "--quiet", "--aggregator", str(path)])
