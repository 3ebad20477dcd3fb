"""Precision-recall curves as a PNG, drawn with Pillow (no plotting library, no Django).

`evaluate` and `manage.py train_aggregator` print an mAP table per method; the curves beside it
show where the methods differ (the first photos, or the long tail of a category), which one
number hides. A curve is the interpolated precision at fixed recall levels, averaged over the
categories (`retrieval.engine.metrics.interpolated_precision`,
`retrieval.engine.train.precision_recall_curves`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .metrics import RECALL_LEVELS

__all__ = ["SIZE", "draw_pr_curves", "save_pr_curves"]

SIZE = (800, 560)
_MARGIN = {"left": 70, "right": 24, "top": 46, "bottom": 60}
_COLOURS = ["#2357c6", "#d9822b", "#1f7a4d", "#b3261e", "#7b4fb0", "#5b6575"]
_TICKS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def _font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """(A font, whether it has Greek): DejaVu Sans where the system has it (labels say λ),
    else Pillow's own font, which has no λ."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:
        return ImageFont.load_default(size=size), False


def draw_pr_curves(curves: Sequence[tuple[str, np.ndarray]], title: str,
                   recall_levels: np.ndarray = RECALL_LEVELS,
                   maps: Mapping[str, float | None] | None = None, size: tuple[int, int] = SIZE) -> Image.Image:
    """One line per (label, precision at `recall_levels`), recall on x, precision on y, both
    from 0 to 1; the legend gives each label (with its mAP when `maps` has it)."""
    width, height = size
    left, top = _MARGIN["left"], _MARGIN["top"]
    plot_w, plot_h = width - left - _MARGIN["right"], height - top - _MARGIN["bottom"]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    (small, greek), (normal, _) = _font(13), _font(15)

    def spelled(text: str) -> str:
        return text if greek else text.replace("λ", "lambda")

    def point(recall: float, precision: float) -> tuple[float, float]:
        return left + recall * plot_w, top + (1.0 - precision) * plot_h

    draw.text((width / 2, 14), spelled(title), fill="#1d2430", font=normal, anchor="mt")
    for tick in _TICKS:
        x, y = point(tick, tick)
        draw.line([(x, top), (x, top + plot_h)], fill="#e6e9ef")
        draw.line([(left, y), (left + plot_w, y)], fill="#e6e9ef")
        draw.text((x, top + plot_h + 6), f"{tick:.1f}", fill="#5b6575", font=small, anchor="mt")
        draw.text((left - 8, y), f"{tick:.1f}", fill="#5b6575", font=small, anchor="rm")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="#5b6575")
    draw.text((left + plot_w / 2, height - 18), "recall", fill="#1d2430", font=normal, anchor="mm")
    ylabel = Image.new("RGBA", (120, 24), (255, 255, 255, 0))
    ImageDraw.Draw(ylabel).text((60, 12), "precision", fill="#1d2430", font=normal, anchor="mm")
    rotated = ylabel.rotate(90, expand=True)
    image.paste(rotated, (8, int(top + plot_h / 2 - rotated.height / 2)), rotated)

    levels = np.asarray(recall_levels, dtype=np.float64)
    legend_y = top + plot_h - 12 - 20 * (len(curves) - 1)
    for i, (label, precision) in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        values = np.asarray(precision, dtype=np.float64)
        finite = np.isfinite(values)
        if finite.sum() > 1:
            draw.line([point(r, p) for r, p in zip(levels[finite], values[finite])], fill=colour, width=3, joint="curve")
        mean_ap = (maps or {}).get(label)
        text = label if mean_ap is None else f"{label}: mAP {mean_ap:.4f}"
        y = legend_y + 20 * i
        draw.line([(left + 14, y), (left + 38, y)], fill=colour, width=3)
        draw.text((left + 44, y), spelled(text), fill="#1d2430", font=small, anchor="lm")
    return image


def save_pr_curves(path: str | Path, curves: Sequence[tuple[str, np.ndarray]], title: str,
                   recall_levels: np.ndarray = RECALL_LEVELS,
                   maps: Mapping[str, float | None] | None = None) -> Path:
    """Draw the curves and write them as a PNG at `path` (its folder is made); the path back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_pr_curves(curves, title, recall_levels, maps).save(path, format="PNG")
    return path
