"""Prompt templates: a site's template file, and the two text-vector conventions."""

import numpy as np
import pytest

from retrieval.engine.prompts import ensemble_templates, read_templates


def test_template_file_one_a_line_blank_lines_skipped(tmp_path) -> None:
    path = tmp_path / "caltech.txt"
    path.write_text("a photo of a {}.\n\n  a painting of the {}.  \nitap of my {}.\n", encoding="utf-8")
    assert read_templates(path) == ["a photo of a {}.", "a painting of the {}.", "itap of my {}."]


def test_template_file_errors_name_the_problem(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("a photo of a {}.\na photo of a dog.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: template 'a photo of a dog.' has no \{\}"):
        read_templates(path)
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no template"):
        read_templates(path)
    with pytest.raises(ValueError, match="cannot read templates"):
        read_templates(tmp_path / "missing.txt")


def test_normalized_and_plain_means() -> None:
    per_template = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.6, 0.8]]], dtype=np.float32)
    np.testing.assert_allclose(ensemble_templates(per_template, "plain"), [[0.5, 0.5], [0.6, 0.8]], atol=1e-7)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(ensemble_templates(per_template, "normalized"), [[s, s], [0.6, 0.8]], atol=1e-7)
    assert ensemble_templates(per_template, "plain").dtype == np.float32
    with pytest.raises(ValueError, match="unknown text_mean 'median'"):
        ensemble_templates(per_template, "median")
    with pytest.raises(ValueError, match="templates >= 1"):
        ensemble_templates(np.zeros((2, 0, 3)), "plain")
