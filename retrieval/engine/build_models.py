"""Build random-weight models in the libraries' own on-disk formats.

``python -m retrieval.engine.build_models --profile tiny [--out DIR]`` writes, under
``DIR`` (default: ``model_dir()``), one folder per model id of the profile:

- open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors`` (what
  ``open_clip.create_model('local-dir:<folder>')`` and the hub repos use);
- transformers: a Dinov2 ``save_pretrained`` folder with its image processor config;
- diffusers: a StableDiffusionPipeline ``save_pretrained`` folder (unet, vae, text_encoder,
  scheduler) whose tokenizer is the real CLIP BPE tokenizer, made from open_clip's bundled
  ``bpe_simple_vocab_16e6.txt.gz``; and an AutoencoderTiny (taesd) folder.

So random-weight profiles load through exactly the same code as the real ones. ``tiny`` is a
few MB and builds in seconds; ``default-random`` / ``paper-random`` are full-size twins of the
real architectures (configs of ViT-B-32 / ViT-L-14 from open_clip, DINOv2 small/large and
SD-Turbo = SD 2.1 written here) for speed benchmarks. Building is seeded and deterministic:
the same command writes the same bytes. A finished folder carries a stamp and is not rebuilt.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from retrieval.engine.model_folders import model_dir
from retrieval.engine.profiles import PROFILES, Profile
from retrieval.engine.runtime import progress_bars_only_on_a_terminal

STAMP = ".cletir-built.json"
# Bump when a recipe changes so stale folders are rebuilt.
RECIPE_VERSION = 1

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _seed_for(model_id: str) -> int:
    # A stable per-model seed: independent of build order and of the other models.
    return zlib.crc32(model_id.encode())


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------- open_clip


def _open_clip_cfg(recipe: str) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) for open_clip_config.json."""
    import open_clip

    if recipe == "tiny":
        model_cfg = {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
            # The real CLIP vocabulary and context so the real tokenizer is exercised.
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
        }
    elif recipe == "default":
        model_cfg = open_clip.get_model_config("ViT-B-32")
    elif recipe == "paper":
        model_cfg = open_clip.get_model_config("ViT-L-14")
        model_cfg["quick_gelu"] = True  # the OpenAI weights were trained with QuickGELU
    else:
        raise ValueError(recipe)
    preprocess_cfg = {
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    return model_cfg, preprocess_cfg


def build_open_clip(folder: Path, model_id: str, recipe: str) -> None:
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model_cfg, preprocess_cfg = _open_clip_cfg(recipe)
    torch.manual_seed(_seed_for(model_id))
    model = CLIP(**model_cfg)
    # Stored in fp16 like every built model here: half the bytes; loaders cast to their dtype.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})


# ---------------------------------------------------------------------------- DINOv2


def _dinov2_config(recipe: str):
    from transformers import Dinov2Config

    if recipe == "tiny":
        return Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
            patch_size=14, image_size=56,
        )
    # facebook/dinov2-small and -large, written by hand (hub config.json values).
    size = {"default": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
            "paper": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)}[recipe]
    return Dinov2Config(
        **size, mlp_ratio=4, patch_size=14, image_size=518, layerscale_value=1.0,
        layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, use_swiglu_ffn=False,
        drop_path_rate=0.0, initializer_range=0.02,
    )


def build_dinov2(folder: Path, model_id: str, recipe: str) -> None:
    from transformers import BitImageProcessor, Dinov2Model

    torch.manual_seed(_seed_for(model_id))
    model = Dinov2Model(_dinov2_config(recipe)).eval()
    model.half().save_pretrained(folder)
    short, crop = (64, 56) if recipe == "tiny" else (256, 224)
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": short}, resample=3,  # bicubic, as the hub config
        do_center_crop=True, crop_size={"height": crop, "width": crop},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), do_convert_rgb=True,
    ).save_pretrained(folder)


# ---------------------------------------------------------------------------- tokenizer


def write_clip_tokenizer(folder: Path) -> None:
    """The real CLIP BPE tokenizer (HF format) made from open_clip's bundled vocabulary.

    Same construction as open_clip's SimpleTokenizer: 256 byte symbols, their ``</w>`` forms,
    the first 48894 merges, then the two special tokens; token ids are identical.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_syms = list(bytes_to_unicode().values())
    vocab = byte_syms + [s + "</w>" for s in byte_syms] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(folder / "tokenizer_config.json", {
        **special, "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
        "model_max_length": 77, "tokenizer_class": "CLIPTokenizer",
    })


# ---------------------------------------------------------------------------- diffusers


def _sd_configs(recipe: str) -> tuple[dict, dict, dict]:
    """(unet, vae, text_encoder) configs; full size = SD 2.1 base as used by SD-Turbo."""
    if recipe == "tiny":
        unet = dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
        )
        vae = dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.18215,
        )
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    else:
        unet = dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu",
            block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, norm_eps=1e-5,
            flip_sin_to_cos=True, freq_shift=0, center_input_sample=False, downsample_padding=1,
            mid_block_scale_factor=1,
        )
        vae = dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215, act_fn="silu",
        )
        # OpenCLIP ViT-H/14 text tower as diffusers stores it for SD 2.x (23 of 24 layers).
        text = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, projection_dim=512)
    text.update(vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return unet, vae, text


def build_sd_pipeline(folder: Path, model_id: str, recipe: str) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet_cfg, vae_cfg, text_cfg = _sd_configs(recipe)
    seed = _seed_for(model_id)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**vae_cfg)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    # SD-Turbo's scheduler: Euler with trailing timesteps (a 1-step sample starts at t=999).
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
    )
    with tempfile.TemporaryDirectory() as tok_dir:
        write_clip_tokenizer(Path(tok_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # Stored in fp16 (as the hub's fp16 variants): half the disk and load time; the loader
    # casts to the profile's dtype either way. Each model is cast with .half(): diffusers'
    # pipeline .to(dtype) warns about fp32-only modules even when a model has none.
    for model in (unet, vae, text_encoder):
        model.half()
    pipe.save_pretrained(folder, safe_serialization=True)
    # Write the tokenizer files in the hub's own layout (vocab.json + merges.txt), replacing
    # whatever the installed transformers chose to serialise.
    shutil.rmtree(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer")


def build_taesd(folder: Path, model_id: str, recipe: str) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(_seed_for(model_id))
    if recipe == "tiny":
        model = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
        )
    else:
        model = AutoencoderTiny()  # the library defaults are madebyollin/taesd's config
    model.half().save_pretrained(folder, safe_serialization=True)


# ---------------------------------------------------------------------------- driver

Builder = Callable[[Path, str, str], None]
ROLE_BUILDERS: dict[str, Builder] = {
    "vlm": build_open_clip,
    "vision": build_dinov2,
    "generator": build_sd_pipeline,
    "decoder": build_taesd,
}


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAMP):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _is_built(folder: Path, stamp: dict) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) .get("recipe") == stamp["recipe"]
    except (OSError, ValueError):
        return False


def build_profile(profile: Profile | str, out: Path | None = None, force: bool = False,
                  log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build every model of a random-weight profile; return {role: folder}.

    Folders are written to a temporary sibling and renamed, so a concurrent reader never sees
    a half-written model, and a present, stamped folder is left alone unless ``force``.
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if not prof.random_weights or prof.recipe is None:
        raise ValueError(f"profile {prof.name!r} uses real weights; only random-weight profiles can be built")
    root = Path(out) if out is not None else model_dir()
    progress_bars_only_on_a_terminal()
    built: dict[str, Path] = {}
    for role, model_id in prof.model_ids().items():
        folder = root / model_id
        stamp = {"recipe": f"{role}:{prof.recipe}:v{RECIPE_VERSION}", "id": model_id}
        built[role] = folder
        if not force and _is_built(folder, stamp):
            continue
        t0 = time.perf_counter()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            ROLE_BUILDERS[role](tmp, model_id, prof.recipe)
            _write_json(tmp / STAMP, {**stamp, "sha256": _folder_digest(tmp)})
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if log:
            log(f"built {role:9s} {model_id} -> {folder} in {time.perf_counter() - t0:.1f}s")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    buildable = sorted(n for n, p in PROFILES.items() if p.random_weights)
    parser.add_argument("--profile", default="tiny", choices=buildable)
    parser.add_argument("--out", type=Path, default=None, help="model folder root (default: $CLETIR_MODEL_DIR or ~/.cache/cletir/models)")
    parser.add_argument("--force", action="store_true", help="rebuild even when present")
    args = parser.parse_args(argv)
    folders = build_profile(args.profile, args.out, force=args.force, log=lambda m: print(m, file=sys.stderr))
    for role, folder in folders.items():
        print(f"{role}\t{folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
