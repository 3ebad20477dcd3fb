"""Photo files to the two encoders' pixel tensors, a batch at a time, on the encoders' device.

`PhotoBatchPreparer.prepare(paths)` reads, decodes and preprocesses a batch for both encoders
at once and hands back normalised pixel tensors already on the device, plus the error of each
photo that could not be decoded (one bad photo never fails its batch). Two decoders:

* "pillow" (a CPU worker): each photo is read, decoded at reduced scale and resized/cropped by
  Pillow in a thread pool; Pillow releases the GIL while it decodes and resizes, so the threads
  run in parallel with each other and with the forward passes of the batch before.
* "torch" (a GPU worker; tests run it on CPU tensors): photos are read and their headers parsed
  in the thread pool; the JPEGs nvJPEG takes are decoded together on the device, in chunks of
  at most DEVICE_DECODE_MEGAPIXELS, oriented, then resized, cropped and normalised there by torch
  (the same geometry and filter as the libraries). Every other photo (HEIC, PNG, WebP, TIFF, GIF,
  CMYK JPEGs, a JPEG nvJPEG refuses) is decoded by Pillow in the pool and resized on the device
  like the rest. On CUDA the work runs on a stream of its own, so a batch is decoded while the
  encoders run the previous one.

Memory, per batch in flight: the normalised pixels of both encoders (B x 2 x 3 x crop^2 values
in the encoders' dtype: ~0.6 MB per photo at 224 px in fp16, ~1.2 MB in fp32), plus, while it
is being decoded, at most DEVICE_DECODE_MEGAPIXELS x 3 bytes of full-size RGB on the GPU (and
one photo's float32 copy while it is resized), or a reduced Pillow image per decoding thread.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retrieval.engine.photo_decoding import (
    ToRGB,
    decode_jpegs,
    decode_reduced,
    device_decodable,
    orient,
    plain_rgb,
    read_header,
)
from retrieval.engine.photo_preprocessing import (
    CropSpec,
    crops_to_pixels,
    normalise,
    resize_crop,
    resize_crop_tensor,
)

PILLOW, TORCH = "pillow", "torch"
# Full-size decoded RGB on the device at once: 200 MP is 600 MB (~16 photos of 12 MP).
DEVICE_DECODE_MEGAPIXELS = 200


@dataclass
class PreparedPhotos:
    """A batch ready for the encoders: pixels of the photos that decoded, errors of the rest."""

    vlm_pixels: torch.Tensor | None  # (n, 3, crop, crop), normalised, on the device
    vision_pixels: torch.Tensor | None
    decoded: list[int]  # positions (in the batch given) of the photos in the pixel tensors
    errors: dict[int, str]  # position -> "ErrorType: message"
    seconds: dict[str, float] = field(default_factory=dict)  # thread-seconds: read, decode, preprocess
    # Instead of pixels, for encoders whose transform photo_preprocessing does not reproduce
    # (no specs): the decoded photos, which the encoders preprocess with their libraries.
    images: list[Image.Image] | None = None


class _StageClock:
    """Seconds per stage, summed over the threads that ran it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def run(self, stage: str, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class PhotoBatchPreparer:
    """Reads, decodes and preprocesses photo batches for a pair of crop specs on one device."""

    def __init__(self, specs: tuple[CropSpec, CropSpec] | None, device: torch.device | str, dtype: torch.dtype,
                 threads: int, decoder: str | None = None, to_rgb: ToRGB = plain_rgb) -> None:
        self.specs = specs
        self.to_rgb = to_rgb  # how a photo Pillow decodes becomes 8-bit RGB (photo_decoding.decode_reduced)
        self.device = torch.device(device)
        self.dtype = dtype
        self.decoder = decoder or (TORCH if self.device.type == "cuda" and specs is not None else PILLOW)
        if self.decoder not in (PILLOW, TORCH) or (self.decoder == TORCH and specs is None):
            raise ValueError(f"photo decoder {self.decoder!r}: use {PILLOW!r}, or {TORCH!r} with crop specs")
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="cletir-decode")
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def prepare(self, paths: Sequence[str | Path]) -> PreparedPhotos:
        """The batch's pixels for both encoders, and the decoding error of each photo that failed."""
        clock = _StageClock()
        if self.decoder == PILLOW:
            prepared = self._prepare_with_pillow(paths, clock)
        else:
            with torch.cuda.stream(self._stream) if self._stream is not None else nullcontext():
                prepared = self._prepare_with_torch(paths, clock)
            if self._stream is not None:
                self._stream.synchronize()  # blocks this (prefetching) thread only, not the GPU
        prepared.seconds = dict(clock.seconds)
        return prepared

    # ------------------------------------------------------------------ Pillow (CPU workers)

    def _pillow_crops(self, path: str | Path, clock: _StageClock):
        """The photo's crops for both specs (uint8 arrays), or the decoded photo without specs."""
        data = clock.run("read", Path(path).read_bytes)
        image = clock.run("decode", decode_reduced, data, self.to_rgb)
        if self.specs is None:
            return image
        return tuple(clock.run("preprocess", resize_crop, image, spec) for spec in self.specs)

    def _prepare_with_pillow(self, paths: Sequence[str | Path], clock: _StageClock) -> PreparedPhotos:
        futures = [self._pool.submit(self._pillow_crops, path, clock) for path in paths]
        results: list = []
        decoded: list[int] = []
        errors: dict[int, str] = {}
        for position, future in enumerate(futures):
            try:
                results.append(future.result())
                decoded.append(position)
            except Exception as exc:  # any decoding problem is this photo's, not the batch's
                errors[position] = _error(exc)
        if self.specs is None:
            return PreparedPhotos(None, None, decoded, errors, images=results)
        if not results:
            return PreparedPhotos(None, None, decoded, errors)
        start = time.perf_counter()
        pixels = [crops_to_pixels([pair[i] for pair in results], spec).to(self.device, self.dtype)
                  for i, spec in enumerate(self.specs)]
        clock.add("preprocess", time.perf_counter() - start)
        return PreparedPhotos(pixels[0], pixels[1], decoded, errors)

    # ------------------------------------------------------------------ torch (GPU workers)

    def _read_and_sort(self, path: str | Path, clock: _StageClock):
        """(bytes, header) of a photo nvJPEG takes, else its Pillow decoding as a (3, H, W) tensor."""
        data = clock.run("read", Path(path).read_bytes)
        header = clock.run("decode", read_header, data)
        if device_decodable(header):
            return data, header
        return clock.run("decode", self._decode_on_cpu, data), None

    def _decode_on_cpu(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.array(decode_reduced(data, self.to_rgb))).permute(2, 0, 1)

    def _prepare_with_torch(self, paths: Sequence[str | Path], clock: _StageClock) -> PreparedPhotos:
        futures = [self._pool.submit(self._read_and_sort, path, clock) for path in paths]
        full: dict[int, torch.Tensor] = {}  # decoded, not yet resized
        jpegs: list[tuple[int, bytes, object]] = []
        errors: dict[int, str] = {}
        for position, future in enumerate(futures):
            try:
                content, header = future.result()
            except Exception as exc:  # any decoding problem is this photo's, not the batch's
                errors[position] = _error(exc)
                continue
            if header is None:
                full[position] = content.to(self.device)
            else:
                jpegs.append((position, content, header))
        crops: dict[int, tuple[torch.Tensor, ...]] = {}
        for chunk in _chunks_by_pixels(jpegs, DEVICE_DECODE_MEGAPIXELS * 1_000_000):
            decoded = clock.run("decode", self._decode_on_device, [data for _, data, _ in chunk])
            for (position, data, header), image in zip(chunk, decoded):
                if not isinstance(image, Exception):
                    full[position] = orient(image, header.orientation)
                    continue
                try:  # nvJPEG refused it: Pillow decodes it (and says why when it cannot either)
                    full[position] = clock.run("decode", self._decode_on_cpu, data).to(self.device)
                except Exception as exc:
                    errors[position] = _error(exc)
            # Resized before the next chunk is decoded: one chunk of full-size images at a time.
            clock.run("preprocess", self._resize, full, crops)
        clock.run("preprocess", self._resize, full, crops)
        positions = sorted(crops)
        if not positions:
            return PreparedPhotos(None, None, [], errors)
        start = time.perf_counter()
        pixels = [normalise(torch.stack([crops[p][i] for p in positions]), spec).to(self.dtype)
                  for i, spec in enumerate(self.specs)]
        self._sync()
        clock.add("preprocess", time.perf_counter() - start)
        return PreparedPhotos(pixels[0], pixels[1], positions, errors)

    def _decode_on_device(self, datas: list[bytes]) -> list[torch.Tensor | Exception]:
        images = decode_jpegs(datas, self.device)
        self._sync()
        return images

    def _resize(self, full: dict[int, torch.Tensor], crops: dict[int, tuple[torch.Tensor, ...]]) -> None:
        """Move every full-size image of `full` to `crops`, as its crops for both specs."""
        while full:
            position, image = full.popitem()
            crops[position] = tuple(resize_crop_tensor(image, spec) for spec in self.specs)
        self._sync()

    def _sync(self) -> None:
        """Wait for this thread's device work, so stage times are real (no-op on a CPU)."""
        if self._stream is not None:
            self._stream.synchronize()


def _chunks_by_pixels(items: list[tuple[int, bytes, object]], budget: int):
    """Consecutive chunks whose photos hold at most `budget` pixels (a larger photo: alone)."""
    chunk, total = [], 0
    for item in items:
        pixels = item[2].pixels
        if chunk and total + pixels > budget:
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += pixels
    if chunk:
        yield chunk
