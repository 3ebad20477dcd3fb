"""Decoding stored photos upright in RGB: Pillow on the CPU, nvJPEG on a GPU.

The encoders look at a 224-256 px version of each photo, so neither path decodes more than it
must for that:

* Pillow (`decode_reduced`): JPEGs are decoded at reduced scale (libjpeg's DCT scaling, a
  fraction of a full decode), other formats are box-reduced, never below MIN_SHORT_SIDE on the
  shorter side; EXIF orientation applied. Every format the library accepts (JPEG, PNG, WebP,
  TIFF, GIF, HEIC) goes this way on a CPU worker, and it is the GPU path's fallback.
* GPU (`decode_jpegs`): a list of JPEGs decoded in one nvJPEG call
  (`torchvision.io.decode_jpeg(list, device="cuda")`) at full size, straight into GPU memory,
  where torch resizes them (photo_preprocessing). nvJPEG does not apply EXIF orientation, so the
  orientation read from the header (`read_header`) is applied to the tensor (`orient`). It takes
  baseline and progressive YCbCr or greyscale JPEGs (`device_decodable`); anything else, and any
  JPEG it refuses, goes to Pillow, photo by photo.
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pillow_heif
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg

# HEIC/HEIF photos are accepted at upload; the opener is registered here too, so that the engine
# decodes them without the web application's imports.
pillow_heif.register_heif_opener()

# The encoders resize the shorter side to 224-256 px: decoding a 12 MP JPEG at full size would be
# most of a CPU worker's time outside the forward passes.
MIN_SHORT_SIDE = 256
EXIF_ORIENTATION = 0x0112
# torchvision 0.29 marks its decoders deprecated in favour of torchcodec; decode_jpeg is still the
# batched nvJPEG entry point, and the warning would be repeated for every batch.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io\.image")


def plain_rgb(image: Image.Image) -> Image.Image:
    """Pillow's own conversion to RGB: right for 8-bit photos; it clips wider samples (a 16-bit
    grey becomes white), so the product passes its own tone-keeping conversion instead
    (`assets.imaging.to_rgb8`, through the `to_rgb` arguments below)."""
    return image.convert("RGB")


ToRGB = Callable[[Image.Image], Image.Image]


def decode_reduced(source: bytes | str, to_rgb: ToRGB = plain_rgb) -> Image.Image:
    """A photo (its bytes or its path) upright, in 8-bit RGB (`to_rgb`, before reducing: Pillow
    reduces no 16-bit mode), with its shorter side reduced towards MIN_SHORT_SIDE (whatever the
    aspect ratio: a panorama keeps the detail its crop needs)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        scale = MIN_SHORT_SIDE / min(image.size)
        if image.format == "JPEG" and scale < 1:
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        upright = to_rgb(ImageOps.exif_transpose(image))
        factor = min(upright.size) // MIN_SHORT_SIDE
        if factor >= 2:
            upright = upright.reduce(factor)  # a box filter: fast, no aliasing; the encoders resize the rest
        return upright


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, read without decoding its pixels."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int  # EXIF orientation, 1 (upright) to 8

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> PhotoHeader:
    """The header of a photo's bytes (raises what Pillow raises on a file that is no image)."""
    with Image.open(io.BytesIO(data)) as image:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        return PhotoHeader(format=image.format or "", mode=image.mode, width=image.width, height=image.height,
                           orientation=orientation if orientation in range(1, 9) else 1)


def device_decodable(header: PhotoHeader) -> bool:
    """Whether nvJPEG takes the photo: a JPEG in YCbCr/RGB or greyscale (not CMYK or YCCK)."""
    return header.format == "JPEG" and header.mode in ("RGB", "L")


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) tensor turned upright for its EXIF orientation, as ImageOps.exif_transpose does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:  # transpose (mirror across the main diagonal)
        return image.transpose(-2, -1)
    if orientation == 6:  # rotate 90° clockwise
        return image.rot90(-1, dims=(-2, -1))
    if orientation == 7:  # transverse (mirror across the other diagonal)
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # rotate 90° counter-clockwise
        return image.rot90(1, dims=(-2, -1))
    return image


def decode_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor | Exception]:
    """(3, H, W) uint8 RGB tensors on `device` for a list of JPEGs, in one decoder call; when
    the call fails (one bad JPEG fails them all), each photo is decoded alone and the ones that
    still fail get their exception in their place."""
    if not datas:
        return []
    inputs = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    try:
        return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device))
    except Exception:  # nvJPEG raises RuntimeError; whatever it is, each photo is tried alone
        pass
    results: list[torch.Tensor | Exception] = []
    for single in inputs:
        try:
            results.append(decode_jpeg([single], mode=ImageReadMode.RGB, device=device)[0])
        except Exception as exc:
            results.append(exc)
    return results
