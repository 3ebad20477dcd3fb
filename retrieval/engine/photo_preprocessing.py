"""Batched preprocessing of library photos for both image encoders at once.

Indexing runs the VLM image encoder and the vision encoder on the same photos. Their libraries'
own preprocessing (open_clip's torchvision transform, transformers' image processor) handles
one image at a time through several Python layers and costs about as much as a ViT-B/32
forward pass on a CPU. Both pipelines are "resize the shorter side (bicubic, antialiased),
centre-crop, scale to [0, 1], normalise with a mean and std": this module does exactly that
with Pillow's C resize and one vectorised normalisation per batch, reading every parameter from
the libraries' own configs so the two paths stay equivalent (tests compare the pixel tensors).
Configurations it does not reproduce exactly return None, and the library path is used.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class CropSpec:
    """Resize the shorter side to `shortest`, centre-crop `crop` x `crop`, normalise."""

    shortest: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def open_clip_spec(model) -> CropSpec | None:
    """The spec of an open_clip model's inference transform, when it is the standard one."""
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    size = cfg.get("size")
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2 or size[0] != size[1]:
        return None
    if cfg.get("resize_mode", "shortest") != "shortest" or cfg.get("interpolation", "bicubic") != "bicubic":
        return None
    return CropSpec(shortest=size[0], crop=size[0], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def image_processor_spec(processor) -> CropSpec | None:
    """The spec of a transformers image processor (DINOv2's BitImageProcessor and kin)."""
    size, crop = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    shortest = _get(size, "shortest_edge")
    height, width = _get(crop, "height"), _get(crop, "width")
    resample = getattr(processor, "resample", None)
    if not (shortest and height and height == width and getattr(processor, "do_center_crop", False)):
        return None
    if int(getattr(resample, "value", resample)) != int(Image.Resampling.BICUBIC):
        return None
    if not (getattr(processor, "do_rescale", True) and getattr(processor, "do_normalize", True)):
        return None
    if abs(float(getattr(processor, "rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        return None
    return CropSpec(shortest=int(shortest), crop=int(height), mean=tuple(processor.image_mean), std=tuple(processor.image_std))


def _get(obj, key):
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def resize_crop(image: Image.Image, spec: CropSpec) -> np.ndarray:
    """(crop, crop, 3) uint8: the shorter side resized to spec.shortest, centre-cropped."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    w, h = image.size
    scale = spec.shortest / min(w, h)
    # torchvision and transformers both truncate the longer side (int(), not round()).
    size = (spec.shortest, int(h * scale)) if w <= h else (int(w * scale), spec.shortest)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left = int(round((size[0] - spec.crop) / 2.0))
    top = int(round((size[1] - spec.crop) / 2.0))
    return np.asarray(resized.crop((left, top, left + spec.crop, top + spec.crop)), dtype=np.uint8)


def to_pixels(images: Sequence[Image.Image], spec: CropSpec) -> torch.Tensor:
    """(B, 3, crop, crop) float32 normalised pixel tensor for a batch."""
    batch = torch.from_numpy(np.stack([resize_crop(image, spec) for image in images]))
    pixels = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return pixels.sub_(mean).div_(std)
