"""Proxy generation: K images of the query category from a distilled text-to-image model.

One batched diffusers call per query: the prompt is encoded once and expanded to K images
(``num_images_per_prompt``); each image's starting noise comes from its own CPU
``torch.Generator`` seeded with its seed, so image i depends only on (query, seeds[i]) and a
proxy set is reproducible and cacheable. Guidance is off (distilled "turbo" models are trained
for guidance_scale 0) and the step count and size come from the profile.
"""

from __future__ import annotations

import threading

import torch
from diffusers import AutoencoderTiny, AutoPipelineForText2Image
from diffusers.utils import is_accelerate_available
from PIL import Image

from retrieval.engine.fingerprints import weights_fingerprint
from retrieval.engine.model_cache import load_once
from retrieval.engine.model_folders import local_folder, missing_weights
from retrieval.engine.photo_preprocessing import tensors_to_images
from retrieval.engine.profiles import Profile
from retrieval.engine.runtime import (
    apply_torch_threads,
    progress_bars_only_on_a_terminal,
    resolve_device,
    resolve_dtype,
)

_LOAD_ERRORS = (OSError, RuntimeError, ValueError)


def _source(profile: Profile, model_id: str, role: str, marker: str) -> str:
    """Local folder when it holds ``marker``, else the hub id (HF cache / hub)."""
    folder = local_folder(model_id)
    if (folder / marker).is_file():
        return str(folder)
    if profile.random_weights:
        raise missing_weights(profile, model_id, role)
    return model_id


class ProxyGenerator:
    """A text-to-image pipeline that makes the K proxy images of a query."""

    def __init__(self, profile: Profile, device: torch.device | str | None = None) -> None:
        apply_torch_threads()
        progress_bars_only_on_a_terminal()
        self.profile = profile
        self.device = resolve_device(profile, None if device is None else str(device))
        self.dtype = resolve_dtype(profile.generator_dtype, self.device, "generator")
        source = _source(profile, profile.generator, "generator", "model_index.json")
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                source, dtype=self.dtype, safety_checker=None, requires_safety_checker=False,
                low_cpu_mem_usage=is_accelerate_available(),  # without accelerate: no warning
            )
        except _LOAD_ERRORS as exc:
            raise missing_weights(profile, profile.generator, "generator", exc) from exc
        if profile.decoder:
            # The tiny autoencoder decodes the same latents at a fraction of the VAE's cost.
            dec_source = _source(profile, profile.decoder, "decoder", "config.json")
            try:
                pipe.vae = AutoencoderTiny.from_pretrained(
                    dec_source, dtype=self.dtype, low_cpu_mem_usage=is_accelerate_available()
                )
            except _LOAD_ERRORS as exc:
                raise missing_weights(profile, profile.decoder, "decoder", exc) from exc
        pipe.set_progress_bar_config(disable=True)
        self._fingerprint = weights_fingerprint(
            (f"{name}.{k}", v)
            for name in ("unet", "vae", "text_encoder")
            for k, v in getattr(pipe, name).state_dict().items()
        )
        self.pipe = pipe.to(self.device)
        self._lock = threading.Lock()  # a diffusers pipeline (its scheduler) is not re-entrant

    def prompt(self, query: str) -> str:
        """The text given to the generator for ``query``."""
        return self.profile.proxy_prompt.replace("{}", query)

    def generate(self, query: str, seeds: list[int]) -> list[Image.Image]:
        """One proxy image per seed (RGB, proxy_size x proxy_size), in one pipeline call."""
        return tensors_to_images(self.generate_tensors(query, seeds))

    def generate_tensors(self, query: str, seeds: list[int]) -> torch.Tensor:
        """The proxy images as a (K, 3, proxy_size, proxy_size) float tensor in [0, 1], left on
        the device the decoder ran on: the vision encoder takes them from there
        (`Encoders.encode_vision_tensors`), with no round trip through Pillow."""
        size = self.profile.proxy_size
        if not seeds:
            return torch.zeros((0, 3, size, size))
        # CPU generators: the starting noise is then identical on every device.
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        with self._lock, torch.inference_mode():
            result = self.pipe(
                prompt=self.prompt(query),
                num_images_per_prompt=len(seeds),
                generator=generators,
                num_inference_steps=self.profile.steps,
                guidance_scale=0.0,
                height=size,
                width=size,
                output_type="pt",
            )
        return result.images

    def warmup(self) -> None:
        """Generate once at the profile's size and K so the first real query does not pay the
        one-time kernel setup (on CPU bf16 the first call is ~2x slower): call it when a worker
        starts."""
        self.generate("warm-up", list(range(self.profile.k)))

    def model_versions(self) -> dict[str, str]:
        """Everything that changes the proxy images: part of a proxy cache key."""
        p = self.profile
        return {
            "generator": p.generator,
            "generator_fingerprint": self._fingerprint,
            "decoder": p.decoder or "vae",
            "proxy_prompt": p.proxy_prompt,
            "proxy_size": str(p.proxy_size),
            "steps": str(p.steps),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def load_generator(profile: Profile | str, device: str | None = None) -> ProxyGenerator:
    """The proxy generator of a profile, loaded once per process (same object every call)."""
    return load_once(ProxyGenerator, profile, device)
