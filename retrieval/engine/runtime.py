"""Run-time choices a site makes for a profile: CLETIR_* overrides, device, dtype, threads,
and whether the model libraries draw progress bars.

``get_profile`` is the lookup the product uses: the registered profile (``profiles``) with the
site's environment overrides applied. Imports no torch at module level (torch is imported by
the functions that need it), so configuration code can call ``get_profile`` cheaply.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from retrieval.engine.profiles import Profile, lookup, validate

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


def get_profile(name: str, environ: Mapping[str, str] | None = None) -> Profile:
    """The named profile with environment overrides (see ``ENV_OVERRIDES``) applied."""
    return with_overrides(lookup(name), environ)


def as_profile(profile: Profile | str) -> Profile:
    """Accept a profile or a profile name."""
    return get_profile(profile) if isinstance(profile, str) else profile


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


def progress_bars_only_on_a_terminal() -> None:
    """Turn the model libraries' progress bars off when stderr is not a terminal.

    Loading and saving weights draws bars (transformers' "Loading weights" and "Writing model
    shards"): on a terminal they show progress; in a worker's log, the demo's log file or a
    captured output they are a line of noise per redraw. HF_HUB_DISABLE_PROGRESS_BARS, when set,
    decides instead. Every loader uses transformers; diffusers' bars are switched off only when
    the caller has imported it (its import is heavy, and encoders alone never need it).
    """
    if "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ or sys.stderr.isatty():
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # huggingface_hub's bars with it
    diffusers_logging = sys.modules.get("diffusers.utils.logging")
    if diffusers_logging is not None:
        diffusers_logging.disable_progress_bar()
