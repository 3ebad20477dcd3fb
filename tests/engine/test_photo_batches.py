"""Photo batches for indexing: the Pillow (CPU) and torch (GPU, run here on CPU tensors) paths
give the pixels the libraries' own preprocessing gives, on real photographs, in every format the
library accepts, upright, and a photo that cannot be decoded fails alone.

Pixels are compared at the `default` profile's real geometry (open_clip ViT-B-32: 224 px;
DINOv2: shorter side 256, crop 224), with the libraries' own transforms built from the same
configs the models carry (no weights needed); vectors with the tiny models here and with the
full-size `default-random` models in the slow test.
"""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pillow_heif
import pytest
import skimage
import torch
from PIL import Image, ImageOps

from retrieval.engine import photo_decoding
from retrieval.engine.photo_batches import PILLOW, TORCH, PhotoBatchPreparer
from retrieval.engine.photo_decoding import orient, read_header
from retrieval.engine.photo_preprocessing import CropSpec, image_processor_spec, open_clip_spec

# The photographs scikit-image ships (the demo's sample library).
SAMPLES = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
           "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
           "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png", "no_time_for_that_tiny.gif"]
SAMPLE_FOLDER = Path(skimage.__file__).parent / "data"


def sample(name: str) -> Image.Image:
    with Image.open(SAMPLE_FOLDER / name) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def jpeg_samples(tmp_path_factory) -> list[Path]:
    """Every sample photo as a camera-like JPEG (what the GPU path decodes itself)."""
    folder = tmp_path_factory.mktemp("jpeg-samples")
    paths = []
    for name in SAMPLES:
        path = folder / f"{Path(name).stem}.jpg"
        sample(name).save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


class Libraries:
    """The `default` profile's preprocessing as its libraries run it, and the specs read from it."""

    def __init__(self) -> None:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.transform import PreprocessCfg, image_transform_v2
        from transformers import BitImageProcessor

        # As retrieval.engine.build_models writes the default recipe's configs (and the hub's).
        clip_cfg = {"size": 224, "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
                    "interpolation": "bicubic", "resize_mode": "shortest"}
        self.clip = image_transform_v2(PreprocessCfg(**clip_cfg), is_train=False)
        self.processor = BitImageProcessor(
            do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
            crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
        )
        self.specs = (open_clip_spec(SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=clip_cfg))),
                      image_processor_spec(self.processor))

    def pixels(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        vlm = torch.stack([self.clip(image) for image in images])
        vision = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return vlm, vision


@pytest.fixture(scope="module")
def libraries() -> Libraries:
    return Libraries()


def unit_scale(pixels: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """Normalised pixels back on the 0-1 scale."""
    return pixels.float() * torch.tensor(spec.std).view(1, 3, 1, 1) + torch.tensor(spec.mean).view(1, 3, 1, 1)


def pixel_differences(prepared, expected, specs) -> list[torch.Tensor]:
    """Per photo, the mean absolute difference on the 0-1 scale, for each encoder's pixels."""
    differences = []
    for got, want, spec in zip((prepared.vlm_pixels, prepared.vision_pixels), expected, specs):
        assert got.shape == want.shape
        differences.append((unit_scale(got, spec) - unit_scale(want, spec)).abs().mean(dim=(1, 2, 3)))
    return differences


def assert_same_pixels(libraries, prepared, references: list[Image.Image], limit: float = 0.01) -> None:
    for difference in pixel_differences(prepared, libraries.pixels(references), libraries.specs):
        assert difference.max().item() <= limit, difference


def preparer(source, decoder: str) -> PhotoBatchPreparer:
    """A CPU preparer for the specs of `source` (Libraries or encoders)."""
    specs = source.specs if isinstance(source, Libraries) else source.photo_specs
    return PhotoBatchPreparer(specs, "cpu", torch.float32, threads=2, decoder=decoder)


def opened(paths) -> list[Image.Image]:
    """The reference: each file decoded in full by Pillow (the libraries then resize it)."""
    return [Image.open(path).convert("RGB") for path in paths]


def test_the_torch_path_gives_the_libraries_pixels_on_real_photos(libraries, jpeg_samples):
    prepared = preparer(libraries, TORCH).prepare(jpeg_samples)

    assert prepared.errors == {} and prepared.decoded == list(range(len(jpeg_samples)))
    assert_same_pixels(libraries, prepared, opened(jpeg_samples))
    assert prepared.seconds.keys() >= {"read", "decode", "preprocess"}


def test_the_pillow_path_gives_the_libraries_pixels_up_to_its_reduced_decoding(libraries, jpeg_samples):
    prepared = preparer(libraries, PILLOW).prepare(jpeg_samples)

    assert prepared.errors == {} and prepared.decoded == list(range(len(jpeg_samples)))
    # The CPU path decodes JPEGs at reduced scale (DCT scaling to a shorter side of >= 256 px,
    # the cost that keeps CPU indexing at its speed): over the photos the difference is a
    # quarter of the limit, but a fine texture decoded at exactly half scale (grass.png) is
    # ~0.013 off. The vectors still agree (test_photo_vectors_...).
    for difference in pixel_differences(prepared, libraries.pixels(opened(jpeg_samples)), libraries.specs):
        assert difference.mean().item() <= 0.01 and difference.max().item() <= 0.02, difference


def test_large_camera_photos_give_the_same_pixels(libraries, tmp_path):
    # 4x the sample (2048 px): the Pillow path decodes at 1/4 scale (DCT scaling) and resizes,
    # the torch path decodes in full and resizes once.
    big = sample("coffee.png").resize((2400, 1600), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, "JPEG", quality=92)
    for decoder in (PILLOW, TORCH):
        assert_same_pixels(libraries, preparer(libraries, decoder).prepare([path]), opened([path]))


def cmyk_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("CMYK").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "HEIF":
        pillow_heif.from_pillow(image).save(buffer, quality=95)
    else:
        image.save(buffer, fmt, **options)
    return buffer.getvalue()


FALLBACK_FORMATS = {
    "png": lambda im: encoded(im, "PNG"),
    "webp": lambda im: encoded(im, "WEBP", lossless=True),
    "tiff": lambda im: encoded(im, "TIFF"),
    "gif": lambda im: encoded(im.quantize(256), "GIF"),
    "heic": lambda im: encoded(im, "HEIF"),
    "cmyk.jpg": cmyk_jpeg,
}


@pytest.mark.parametrize("suffix", sorted(FALLBACK_FORMATS))
def test_what_the_gpu_decoder_refuses_is_decoded_by_pillow(libraries, tmp_path, monkeypatch, suffix):
    device_decoded: list[int] = []
    real = photo_decoding.decode_jpeg

    def spy(inputs, **kwargs):
        device_decoded.append(len(inputs))
        return real(inputs, **kwargs)

    monkeypatch.setattr(photo_decoding, "decode_jpeg", spy)
    photo = tmp_path / f"photo.{suffix}"
    photo.write_bytes(FALLBACK_FORMATS[suffix](sample("coffee.png")))
    jpeg = tmp_path / "plain.jpg"
    sample("chelsea.png").save(jpeg, "JPEG", quality=92)

    prepared = preparer(libraries, TORCH).prepare([photo, jpeg])

    assert prepared.errors == {} and prepared.decoded == [0, 1]
    assert device_decoded == [1]  # only the plain JPEG went to the device decoder
    assert_same_pixels(libraries, prepared, opened([photo, jpeg]))


def test_a_jpeg_the_device_decoder_refuses_falls_back_alone(libraries, jpeg_samples, monkeypatch):
    refused = jpeg_samples[2].read_bytes()
    real, calls = photo_decoding.decode_jpeg, []

    def refuses_one(inputs, **kwargs):  # nvJPEG fails a whole call when one JPEG is unsupported
        calls.append(len(inputs))
        if any(bytes(t.numpy()) == refused for t in inputs):
            raise RuntimeError("nvjpegDecodeBatched failed: unsupported JPEG")
        return real(inputs, **kwargs)

    monkeypatch.setattr(photo_decoding, "decode_jpeg", refuses_one)
    prepared = preparer(libraries, TORCH).prepare(jpeg_samples[:4])

    assert prepared.errors == {} and prepared.decoded == [0, 1, 2, 3]
    assert calls == [4, 1, 1, 1, 1]  # the batch, then each photo alone
    assert_same_pixels(libraries, prepared, opened(jpeg_samples[:4]))


@pytest.mark.parametrize("decoder", [PILLOW, TORCH])
def test_a_photo_that_cannot_be_decoded_fails_alone_with_its_error(libraries, jpeg_samples, tmp_path, decoder):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    missing = tmp_path / "missing.jpg"

    prepared = preparer(libraries, decoder).prepare([jpeg_samples[0], broken, missing, jpeg_samples[1]])

    assert prepared.decoded == [0, 3]
    assert prepared.errors[1].startswith(("UnidentifiedImageError", "OSError"))
    assert prepared.errors[2].startswith("FileNotFoundError")
    assert prepared.vlm_pixels.shape[0] == prepared.vision_pixels.shape[0] == 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_device_decoded_photos(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    image = Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[photo_decoding.EXIF_ORIENTATION] = orientation
    path = tmp_path / "oriented.jpg"
    image.save(path, "JPEG", quality=100, exif=exif)
    data = path.read_bytes()

    decoded = photo_decoding.decode_jpegs([data], torch.device("cpu"))[0]
    upright = orient(decoded, read_header(data).orientation)

    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert read_header(data).orientation == orientation
    assert upright.permute(1, 2, 0).shape == expected.shape
    # Same decoder family: at most JPEG rounding apart.
    assert np.abs(upright.permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).mean() < 2


def test_no_photo_decoded_gives_no_pixels(tiny_encoders, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for decoder in (PILLOW, TORCH):
        prepared = preparer(tiny_encoders, decoder).prepare([broken])
        assert prepared.vlm_pixels is None and prepared.decoded == [] and list(prepared.errors) == [0]
        vlm, vision = tiny_encoders.encode_prepared(prepared)
        assert vlm.shape == (0, tiny_encoders.vlm_dim) and vision.shape == (0, tiny_encoders.vision_dim)


def assert_vectors_match_the_library_paths(encoders, paths) -> None:
    from retrieval.engine.encoders import features_to_numpy

    images = opened(paths)
    expected = np.concatenate([encoders.encode_vlm_images(images), encoders.encode_vision_images(images)], axis=1)
    for decoder in (PILLOW, TORCH):
        vlm, vision = features_to_numpy(encoders.encode_prepared(preparer(encoders, decoder).prepare(paths)))
        got = np.concatenate([vlm, vision], axis=1)
        cosine = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.99, (decoder, cosine)


def test_photo_vectors_of_both_paths_match_the_library_vectors(tiny_encoders, jpeg_samples):
    assert_vectors_match_the_library_paths(tiny_encoders, jpeg_samples)


@pytest.fixture(scope="module")
def default_random_encoders(tmp_path_factory):
    """The full-size random-weight twins of the `default` encoders (ViT-B-32, DINOv2-small), built
    into a temporary folder (the generator is not needed)."""
    from retrieval.engine.build_models import ROLE_BUILDERS
    from retrieval.engine.encoders import Encoders
    from retrieval.engine.model_folders import ENV_MODEL_DIR
    from retrieval.engine.runtime import get_profile

    profile = get_profile("default-random")
    root = tmp_path_factory.mktemp("default-random")
    for role, model_id in (("vlm", profile.vlm), ("vision", profile.vision)):
        (root / model_id).mkdir(parents=True)
        ROLE_BUILDERS[role](root / model_id, model_id, profile.recipe)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_MODEL_DIR, str(root))
        yield Encoders(profile, "cpu")


@pytest.mark.slow
def test_default_random_photo_vectors_of_both_paths_match_the_library_vectors(default_random_encoders, jpeg_samples):
    assert default_random_encoders.photo_specs == Libraries().specs  # the geometry tested above
    assert_vectors_match_the_library_paths(default_random_encoders, jpeg_samples)


def test_device_decoding_holds_a_bounded_number_of_pixels_at_once():
    from retrieval.engine.photo_batches import _chunks_by_pixels
    from retrieval.engine.photo_decoding import PhotoHeader

    def photo(megapixels: int):
        return (0, b"", PhotoHeader("JPEG", "RGB", megapixels * 1000, 1000, 1))

    items = [photo(12), photo(12), photo(12), photo(30), photo(5)]
    chunks = [[header.pixels // 1_000_000 for _, _, header in chunk] for chunk in _chunks_by_pixels(items, 25_000_000)]
    assert chunks == [[12, 12], [12], [30], [5]]  # a photo larger than the budget goes alone
