"""Named model profiles and where their weights live.

A profile names every model the engine uses (VLM, vision encoder, text-to-image generator and
its optional fast decoder) plus the proxy settings (K, size, steps). Weights are looked up
first in a local folder ``<model_dir()>/<id>`` and, for real profiles only, in the Hugging Face
cache / hub through the libraries' own loaders. Random-weight profiles (``tiny`` and the
full-size ``*-random`` twins) are built locally by ``python -m retrieval.engine.build_models``.

This module imports no torch so that configuration code (Django settings, CLIs) can read the
profiles cheaply.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .prompts import TEXT_MEANS

ENV_MODEL_DIR = "CLETIR_MODEL_DIR"


class MissingWeightsError(RuntimeError):
    """Raised when a model's weights are neither in the local model folder nor obtainable."""


@dataclass(frozen=True)
class Profile:
    """Everything that determines how vectors and proxies are made.

    Ids are hub ids (``org/name``); the same string names the local folder under
    ``model_dir()``. ``vlm`` is either an open_clip hub repo (``vlm_pretrained`` None) or a
    built-in open_clip architecture name combined with a ``vlm_pretrained`` tag.
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

# Environment overrides a site may set without editing code: env var -> (field, parser).
_NONE_WORDS = {"", "none", "vae", "full"}
ENV_OVERRIDES: dict[str, tuple[str, Callable[[str], object]]] = {
    "CLETIR_K": ("k", int),
    "CLETIR_PROXY_SIZE": ("proxy_size", int),
    "CLETIR_PROXY_STEPS": ("steps", int),
    # "vae"/"none" decodes with the pipeline's full VAE; anything else is an AutoencoderTiny id.
    "CLETIR_PROXY_DECODER": ("decoder", lambda v: None if v.strip().lower() in _NONE_WORDS else v),
    "CLETIR_DEVICE": ("device", str),
    "CLETIR_ENCODER_DTYPE": ("encoder_dtype", str),
    "CLETIR_GENERATOR_DTYPE": ("generator_dtype", str),
    "CLETIR_BATCH_SIZE": ("batch_size", int),
    "CLETIR_TEXT_MEAN": ("text_mean", lambda v: v.strip().lower()),
}


def with_overrides(profile: Profile, environ: Mapping[str, str] | None = None) -> Profile:
    """Return ``profile`` with the CLETIR_* environment overrides applied."""
    env = os.environ if environ is None else environ
    changes = {}
    for var, (field, parse) in ENV_OVERRIDES.items():
        if var in env:
            changes[field] = parse(env[var])
    return validate(dataclasses.replace(profile, **changes)) if changes else profile


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


def get_profile(name: str, environ: Mapping[str, str] | None = None) -> Profile:
    """The named profile with environment overrides (see ``ENV_OVERRIDES``) applied."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
    return with_overrides(base, environ)


def as_profile(profile: Profile | str) -> Profile:
    """Accept a profile or a profile name."""
    return get_profile(profile) if isinstance(profile, str) else profile


def model_dir() -> Path:
    """Root of local model folders: $CLETIR_MODEL_DIR, else ~/.cache/cletir/models."""
    env = os.environ.get(ENV_MODEL_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cletir" / "models"


def local_folder(model_id: str) -> Path:
    """The folder that, when present, wins over the hub for ``model_id``."""
    return model_dir() / model_id


def resolve_vlm_id(profile: Profile) -> str:
    """The hub id of the profile's open_clip model (arch + tag map to open_clip's own repo)."""
    if profile.vlm_pretrained is None:
        return profile.vlm
    # Lazy: open_clip imports torch. Its pretrained table maps (arch, tag) to a hub repo.
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(profile.vlm, profile.vlm_pretrained)
    hub = (cfg or {}).get("hf_hub", "").strip("/")
    return hub or f"{profile.vlm}-{profile.vlm_pretrained}"


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE, as the hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_weights(profile: Profile, model_id: str, role: str, cause: BaseException | None = None) -> MissingWeightsError:
    """A MissingWeightsError naming the folder, the id and how to get the weights."""
    folder = local_folder(model_id)
    if profile.random_weights:
        how = (
            f"build them with `python -m retrieval.engine.build_models --profile {profile.name}` "
            f"(random weights, no download)"
        )
    else:
        how = (
            f"download them with `hf download {model_id} --local-dir {folder}` on a machine with "
            f"network access (or unset HF_HUB_OFFLINE so the hub cache can be filled)"
        )
    detail = f" ({type(cause).__name__}: {cause})" if cause else ""
    return MissingWeightsError(
        f"{role} weights for profile {profile.name!r} not found: no local folder {folder} "
        f"and hub id {model_id!r} is not available{detail}; {how}. "
        f"Set {ENV_MODEL_DIR} to use another model folder."
    )


# ---------------------------------------------------------------------------- device and dtype

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(profile: Profile, device: str | None = None):
    """torch.device to run on: the argument, else the profile's, else CUDA when present."""
    import torch

    name = device or profile.device
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX).

    Without it, torch emulates bf16 and runs slower than fp32, so bf16 is only chosen here.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(policy: str, device, role: str):
    """torch dtype for a dtype policy ("auto" or a dtype name), a device and a role.

    role is "encoder" or "generator" (both follow the same rule today; the role is kept so
    that a policy can differ per role). "auto" gives fp16 on CUDA; on CPU bf16 where the CPU has
    native bf16 (bench/engine_speed.py measures it), else fp32, since emulated bf16 is slower.
    """
    import torch

    if policy != "auto":
        try:
            return getattr(torch, _DTYPE_NAMES[policy.lower()])
        except KeyError:
            raise ValueError(f"unknown dtype {policy!r}; use auto, float32, float16 or bfloat16") from None
    if torch.device(device).type == "cuda":
        return torch.float16
    if cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def apply_torch_threads(environ: Mapping[str, str] | None = None) -> None:
    """Honour CLETIR_TORCH_THREADS (torch intra-op threads, process-wide) when it is set.

    torch defaults to one thread per physical core, right for a dedicated worker. On a box
    shared with other busy processes fewer threads can be much faster: each parallel region
    waits for its slowest, possibly descheduled, thread (bench/engine_speed.py shows it).
    """
    env = os.environ if environ is None else environ
    value = env.get("CLETIR_TORCH_THREADS", "").strip()
    if value:
        import torch

        torch.set_num_threads(max(1, int(value)))


# ---------------------------------------------------------------------------- weight identity


def weights_fingerprint(named_tensors) -> str:
    """A short hash identifying a set of weights, cheap enough to compute at every load.

    Hashes each tensor's name, shape and an evenly spaced sample of up to 2048 of its values
    (in float32). Two different checkpoints virtually never agree on all samples, and hashing
    the loaded values (not files) makes it independent of file format and location.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda kv: kv[0]):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > 2048:
            # Integer spacing: float linspace overshoots on tensors of ~1e8 elements.
            idx = torch.arange(2048, device=flat.device) * (flat.numel() - 1) // 2047
            flat = flat[idx]
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- per-process models

_LOADED: dict[tuple, object] = {}
_LOADED_LOCK = threading.Lock()


def load_once(factory: Callable, profile: Profile | str, device: str | None = None):
    """`factory(profile, device)`, built once per process for each (factory, profile, device,
    model folder): a worker loads its models on first use and keeps them."""
    prof = as_profile(profile)
    resolved = str(resolve_device(prof, device))
    key = (factory, prof, resolved, str(model_dir()))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = factory(prof, resolved)
        return _LOADED[key]
