"""Prompt templates of the text branch, and how their embeddings become one text vector t.

METHOD.md step 1 encodes the query through every prompt template ("a photo of a {}.", ...) and
averages the (unit) template embeddings. Two conventions exist for that mean
(``Profile.text_mean``):

* ``normalized`` (cletir's, CLIP's zero-shot ensembling): ``t = normalize(mean_p T(p))``.
* ``plain`` (the authors' inference, ``inf.py``): ``t = mean_p T(p)``, not re-normalised. Its
  norm is below 1 by as much as the templates disagree, so in the fused score
  ``(1-λ)<t, I(x)> + λ<q, V(x)>`` it weights the text branch down for that query: the same
  ranking as the normalised t with a λ shifted towards the proxies.

A network (and its λ) trained on text vectors of one convention is meant to be used with that
convention: the authors' checkpoint with ``plain``.

A site can also bring its own templates: a text file with one template a line, ``{}`` where the
category goes (:func:`read_templates`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["TEXT_MEANS", "ensemble_templates", "read_templates"]

#: The text-vector conventions a profile may name (module docstring).
TEXT_MEANS = ("normalized", "plain")


def ensemble_templates(per_template: np.ndarray, text_mean: str) -> np.ndarray:
    """(Q, T, D) template embeddings (unit rows) -> (Q, D) float32 text vectors t.

    ``text_mean`` is ``"normalized"`` (unit rows) or ``"plain"`` (the mean as it is).
    """
    if text_mean not in TEXT_MEANS:
        raise ValueError(f"unknown text_mean {text_mean!r}; use one of {', '.join(TEXT_MEANS)}")
    emb = np.asarray(per_template, dtype=np.float64)
    if emb.ndim != 3 or emb.shape[1] == 0:
        raise ValueError(f"expected (queries, templates >= 1, dim) embeddings, got {emb.shape}")
    mean = emb.mean(axis=1)
    if text_mean == "normalized":
        mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean.astype(np.float32)


def read_templates(path: str | Path) -> list[str]:
    """The templates of a text file: one a line, ``{}`` marking the category; blank lines skipped.

    Raises ValueError naming the line of a template without ``{}`` (it would encode the same
    prompt for every category) or when the file holds no template.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read templates from {path}: {exc}") from None
    templates = []
    for number, line in enumerate(lines, start=1):
        template = line.strip()
        if not template:
            continue
        if "{}" not in template:
            raise ValueError(f"{path}, line {number}: template {template!r} has no {{}} for the category")
        templates.append(template)
    if not templates:
        raise ValueError(f"{path} holds no template (one a line, {{}} for the category)")
    return templates
