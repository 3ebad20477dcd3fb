"""The batched photo preprocessing reproduces the libraries' own preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.engine.photo_preprocessing import ROUND, TRUNCATE, CropSpec, image_processor_spec, open_clip_spec, to_pixels


def photos() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    shapes = [(97, 64), (64, 97), (300, 200), (128, 128), (640, 479)]
    images = []
    for w, h in shapes:
        coarse = Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        images.append(coarse)
    images.append(images[0].convert("L"))  # a greyscale photo goes through RGB conversion
    return images


def test_specs_are_read_from_the_libraries_configs(tiny_encoders):
    clip = open_clip_spec(tiny_encoders._vlm)
    dino = image_processor_spec(tiny_encoders._vision_processor)
    assert clip == CropSpec(32, 32, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
                            crop_offset=ROUND)
    assert dino == CropSpec(64, 56, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_offset=TRUNCATE)


def test_pixels_match_open_clip_and_the_image_processor(tiny_encoders):
    images = photos()
    clip_ref = torch.stack([tiny_encoders._vlm_preprocess(im.convert("RGB")) for im in images])
    clip_fast = to_pixels(images, open_clip_spec(tiny_encoders._vlm))
    dino_ref = tiny_encoders._vision_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    dino_fast = to_pixels(images, image_processor_spec(tiny_encoders._vision_processor))
    assert clip_fast.shape == clip_ref.shape and dino_fast.shape == dino_ref.shape
    # Same resampling filter and crop box: differences are uint8 rounding (1/255/std ~ 0.02).
    assert (clip_fast - clip_ref).abs().max() < 0.05
    assert (dino_fast - dino_ref).abs().max() < 0.05


def test_encode_photos_equals_the_two_library_paths(tiny_encoders):
    images = photos()
    vlm, vision = tiny_encoders.encode_photos(images)
    np.testing.assert_allclose(vlm, tiny_encoders.encode_vlm_images(images), atol=2e-3)
    np.testing.assert_allclose(vision, tiny_encoders.encode_vision_images(images), atol=2e-3)
    assert vlm.dtype == vision.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vision, axis=1), 1, atol=1e-5)


def test_an_unusual_transform_falls_back_to_the_library():
    class Processor:
        size = {"shortest_edge": 256}
        crop_size = {"height": 224, "width": 224}
        resample = Image.Resampling.BILINEAR
        do_center_crop = True
        image_mean, image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    assert image_processor_spec(Processor()) is None
