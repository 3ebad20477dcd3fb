"""The profile registry: named sets of models and proxy settings, as data.

A profile names every model the engine uses (VLM, vision encoder, text-to-image generator and
its optional fast decoder) plus the proxy settings (K, size, steps). Ids are hub ids; the same
string names the model's local folder (``model_folders``). Random-weight profiles (``tiny`` and
the full-size ``*-random`` twins) are built locally by ``python -m retrieval.engine.build_models``.

What a site changes at run time (CLETIR_* overrides, device, dtype, threads) lives in
``runtime``; ``runtime.get_profile`` is the lookup the rest of the product uses.

This module imports no torch so that configuration code (Django settings, CLIs) can read the
profiles cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .prompts import TEXT_MEANS


@dataclass(frozen=True)
class Profile:
    """Everything that determines how vectors and proxies are made.

    Ids are hub ids (``org/name``); the same string names the local folder under
    ``model_folders.model_dir()``. ``vlm`` is either an open_clip hub repo (``vlm_pretrained``
    None) or a built-in open_clip architecture name combined with a ``vlm_pretrained`` tag.
    """

    name: str
    vlm: str
    vision: str
    generator: str
    k: int
    proxy_size: int
    steps: int
    vlm_pretrained: str | None = None
    # AutoencoderTiny (taesd) id used to decode latents instead of the pipeline's own VAE;
    # None decodes with the full VAE. taesd is ~50x cheaper to run than the SD VAE decoder.
    decoder: str | None = None
    proxy_prompt: str = "a photo of a {}."
    # "auto": fp16 on CUDA; on CPU bf16 where the CPU computes it natively (avx512_bf16 or
    # AMX), else fp32. Measured on a 2-core AVX512-BF16 CPU (bench/engine_speed.py): bf16 makes
    # the UNet ~5x and the encoders ~5x faster, and the photo/text vectors stay within cosine
    # 0.9999 of fp32. A site wanting bit-exact fp32 vectors sets CLETIR_ENCODER_DTYPE=float32.
    encoder_dtype: str = "auto"
    generator_dtype: str = "auto"
    # None picks CUDA when present, else CPU.
    device: str | None = None
    batch_size: int = 32
    # True for weights built locally by build_models (never fetched from the hub).
    random_weights: bool = False
    # Builder recipe for random-weight profiles: "tiny", "default" or "paper".
    recipe: str | None = None
    # How template embeddings become the text vector t (retrieval.engine.prompts): "normalized"
    # (cletir: normalize(mean)) or "plain" (the authors' inference: the mean as it is). Use the
    # convention the space's aggregator was trained with.
    text_mean: str = "normalized"

    def model_ids(self) -> dict[str, str]:
        """The folder ids of every model this profile loads (decoder only when used)."""
        ids = {"vlm": resolve_vlm_id(self), "vision": self.vision, "generator": self.generator}
        if self.decoder:
            ids["decoder"] = self.decoder
        return ids


# The real profiles. `default` targets a 2-core CPU (see bench/engine_speed.py): SD-Turbo at
# 256x256, 1 step, taesd decoding. SD-Turbo was trained at 512x512; at 256 the proxies lose
# detail and composition gets worse, which a site with a GPU should undo with
# CLETIR_PROXY_SIZE=512 (or the `paper` profile).
_DEFAULT = Profile(
    name="default",
    vlm="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    vision="facebook/dinov2-small",
    generator="stabilityai/sd-turbo",
    decoder="madebyollin/taesd",
    k=4,
    proxy_size=256,
    steps=1,
)
_PAPER = Profile(
    name="paper",
    vlm="ViT-L-14",
    vlm_pretrained="openai",
    vision="facebook/dinov2-large",
    generator="stabilityai/sd-turbo",
    decoder=None,
    k=10,
    proxy_size=512,
    steps=1,
    text_mean="plain",  # as the authors' inference, so their checkpoint runs as they ran it
)

PROFILES: dict[str, Profile] = {
    "default": _DEFAULT,
    "paper": _PAPER,
    # Full-size random twins: same architectures and settings, locally built weights, so the
    # benchmark measures the real cost through the real loading code without any download.
    "default-random": dataclasses.replace(
        _DEFAULT,
        name="default-random",
        vlm="cletir-random/ViT-B-32",
        vlm_pretrained=None,
        vision="cletir-random/dinov2-small",
        generator="cletir-random/sd-turbo",
        decoder="cletir-random/taesd",
        random_weights=True,
        recipe="default",
    ),
    "paper-random": dataclasses.replace(
        _PAPER,
        name="paper-random",
        vlm="cletir-random/ViT-L-14",
        vlm_pretrained=None,
        vision="cletir-random/dinov2-large",
        generator="cletir-random/sd-turbo",
        decoder=None,
        random_weights=True,
        recipe="paper",
    ),
    # A few MB of random weights in the libraries' own formats, for tests and CI.
    "tiny": Profile(
        name="tiny",
        vlm="cletir-tiny/open-clip",
        vision="cletir-tiny/dinov2",
        generator="cletir-tiny/sd-turbo",
        decoder="cletir-tiny/taesd",
        k=4,
        proxy_size=64,
        steps=1,
        encoder_dtype="float32",
        generator_dtype="float32",
        batch_size=8,
        random_weights=True,
        recipe="tiny",
    ),
}

def validate(profile: Profile) -> Profile:
    """Reject settings the method does not allow (distilled models run 1-4 steps)."""
    if not 1 <= profile.steps <= 4:
        raise ValueError(f"profile {profile.name!r}: steps must be 1-4, got {profile.steps}")
    if profile.k < 1:
        raise ValueError(f"profile {profile.name!r}: k must be >= 1, got {profile.k}")
    if profile.proxy_size % 64:
        # SD latents are size/8 and the UNet halves them three times.
        raise ValueError(f"profile {profile.name!r}: proxy_size must be a multiple of 64")
    if profile.text_mean not in TEXT_MEANS:
        raise ValueError(f"profile {profile.name!r}: text_mean must be one of {', '.join(TEXT_MEANS)}")
    return profile


def lookup(name: str) -> Profile:
    """The registered profile ``name`` as defined here, without a site's overrides."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


def resolve_vlm_id(profile: Profile) -> str:
    """The hub id of the profile's open_clip model (arch + tag map to open_clip's own repo)."""
    if profile.vlm_pretrained is None:
        return profile.vlm
    # Lazy: open_clip imports torch. Its pretrained table maps (arch, tag) to a hub repo.
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(profile.vlm, profile.vlm_pretrained)
    hub = (cfg or {}).get("hf_hub", "").strip("/")
    return hub or f"{profile.vlm}-{profile.vlm_pretrained}"
