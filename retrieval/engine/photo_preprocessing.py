"""Batched preprocessing of library photos for both image encoders at once.

Indexing runs the VLM image encoder and the vision encoder on the same photos. Their libraries'
own preprocessing (open_clip's torchvision transform, transformers' image processor) handles
one image at a time through several Python layers and costs about as much as a ViT-B/32
forward pass on a CPU. Both pipelines are "resize the shorter side (bicubic, antialiased),
centre-crop, scale to [0, 1], normalise with a mean and std": this module does exactly that,
reading every parameter from the libraries' own configs so the paths stay equivalent (tests
compare the pixel tensors), in two forms:

* Pillow (`to_pixels`): Pillow's C resize per photo, one vectorised normalisation per batch;
  the CPU path, where Pillow's resize is the fastest there is.
* torch (`resize_crop_tensor`, `normalise`): the same geometry and the same filter family
  (antialiased bicubic, a = -0.5, as Pillow and torchvision use) on tensors, so photos decoded on
  a GPU are resized, cropped and normalised there without coming back to the CPU; it runs on CPU
  tensors too (tests, proxy images on a CPU worker).

Configurations it does not reproduce exactly return None, and the library path is used.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# How each library places its centre crop when the margin is odd: torchvision's CenterCrop
# rounds (open_clip), transformers' image processors truncate.
ROUND, TRUNCATE = "round", "truncate"


@dataclass(frozen=True)
class CropSpec:
    """Resize the shorter side to `shortest`, centre-crop `crop` x `crop`, normalise."""

    shortest: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_offset: str = ROUND


def open_clip_spec(model) -> CropSpec | None:
    """The spec of an open_clip model's inference transform, when it is the standard one."""
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    size = cfg.get("size")
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2 or size[0] != size[1]:
        return None
    if cfg.get("resize_mode", "shortest") != "shortest" or cfg.get("interpolation", "bicubic") != "bicubic":
        return None
    return CropSpec(shortest=size[0], crop=size[0], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), crop_offset=ROUND)


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
    return CropSpec(shortest=int(shortest), crop=int(height), mean=tuple(processor.image_mean),
                    std=tuple(processor.image_std), crop_offset=TRUNCATE)


def _get(obj, key):
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def resized_size(width: int, height: int, spec: CropSpec) -> tuple[int, int]:
    """(width, height) after the shorter side is resized to spec.shortest; the longer side is
    truncated as torchvision and transformers both compute it (int(shortest * long / short))."""
    if width <= height:
        return spec.shortest, int(spec.shortest * height / width)
    return int(spec.shortest * width / height), spec.shortest


def crop_origin(width: int, height: int, spec: CropSpec) -> tuple[int, int]:
    """(left, top) of the centre crop of a resized image, placed as the spec's library does."""
    if spec.crop_offset == TRUNCATE:
        return int((width - spec.crop) / 2.0), int((height - spec.crop) / 2.0)
    return int(round((width - spec.crop) / 2.0)), int(round((height - spec.crop) / 2.0))


# ---------------------------------------------------------------------------- Pillow (CPU)


def resize_crop(image: Image.Image, spec: CropSpec) -> np.ndarray:
    """(crop, crop, 3) uint8: the shorter side resized to spec.shortest, centre-cropped."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    size = resized_size(*image.size, spec)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left, top = crop_origin(*size, spec)
    return np.asarray(resized.crop((left, top, left + spec.crop, top + spec.crop)), dtype=np.uint8)


def crops_to_pixels(crops: Sequence[np.ndarray], spec: CropSpec) -> torch.Tensor:
    """(B, 3, crop, crop) float32 normalised pixels from `resize_crop` outputs."""
    batch = torch.from_numpy(np.stack(crops))
    return normalise(batch.permute(0, 3, 1, 2).float().div_(255.0), spec)


def to_pixels(images: Sequence[Image.Image], spec: CropSpec) -> torch.Tensor:
    """(B, 3, crop, crop) float32 normalised pixel tensor for a batch."""
    return crops_to_pixels([resize_crop(image, spec) for image in images], spec)


# ---------------------------------------------------------------------------- torch (any device)


def resize_crop_tensor(image: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """(3, crop, crop) float32 in [0, 1] from one (3, H, W) image: uint8 (0-255) or float
    (0-1), on any device. The antialiased bicubic resize runs in float32 (also on a GPU, whose
    half-precision kernels would round the accumulation)."""
    pixels = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    height, width = pixels.shape[-2:]
    new_width, new_height = resized_size(width, height, spec)
    resized = torch.nn.functional.interpolate(pixels[None], size=(new_height, new_width), mode="bicubic",
                                              antialias=True, align_corners=False)[0]
    left, top = crop_origin(new_width, new_height, spec)
    # Pillow clips each resized pixel to 0-255; the bicubic kernel's negative lobes overshoot.
    return resized[:, top:top + spec.crop, left:left + spec.crop].clamp_(0.0, 1.0)


def normalise(pixels: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """(B, 3, crop, crop) pixels in [0, 1] -> normalised with the spec's mean and std (in place)."""
    mean = torch.tensor(spec.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(1, 3, 1, 1)
    return pixels.sub_(mean).div_(std)


def tensors_to_pixels(images: Sequence[torch.Tensor], spec: CropSpec) -> torch.Tensor:
    """(B, 3, crop, crop) float32 normalised pixels from (3, H, W) images of any sizes."""
    return normalise(torch.stack([resize_crop_tensor(image, spec) for image in images]), spec)


def tensors_to_images(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] as RGB Pillow images, rounded to 8 bits as a file stores them."""
    pixels = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in pixels]
