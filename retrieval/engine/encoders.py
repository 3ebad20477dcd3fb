"""The three frozen encoders of the method: VLM text T, VLM image I and vision V.

T and I are an open_clip model, V a transformers vision backbone (DINOv2). Every output is a
float32 numpy array, L2-normalised row-wise. Models are loaded once per process and
(profile, device, model folder) through ``load_encoders``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transformer import text_global_pool
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from retrieval.engine.fingerprints import weights_fingerprint
from retrieval.engine.model_cache import load_once
from retrieval.engine.model_folders import local_folder, missing_weights
from retrieval.engine.photo_batches import PhotoBatchPreparer, PreparedPhotos
from retrieval.engine.photo_decoding import ToRGB, plain_rgb
from retrieval.engine.photo_preprocessing import (
    CropSpec,
    image_processor_spec,
    open_clip_spec,
    tensors_to_images,
    tensors_to_pixels,
    to_pixels,
)
from retrieval.engine.profiles import Profile, resolve_vlm_id
from retrieval.engine.runtime import (
    apply_torch_threads,
    progress_bars_only_on_a_terminal,
    resolve_device,
    resolve_dtype,
)
from retrieval.engine.prompts import ensemble_templates

# The 80 CLIP ImageNet prompt templates, as "{}" format strings (open_clip keeps them as lambdas).
CLIP_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)

# Loading-time failures that mean "these weights are not here" rather than a bug.
_LOAD_ERRORS = (OSError, RuntimeError, ValueError)


def _normalize(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32, copy=False)


def features_to_numpy(features: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(I(x), V(x)) from `Encoders.encode_photo_pixels` as float32 numpy arrays (waits for a GPU)."""
    return tuple(f.float().cpu().numpy().astype(np.float32, copy=False) for f in features)


def _bare_checkpoint(folder: Path) -> Path | None:
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def _tag_options(arch: str, tag: str) -> dict:
    """open_clip settings that a pretrained tag implies but a bare weights file does not carry."""
    cfg = get_pretrained_cfg(arch, tag) or {}
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        "force_preprocess_cfg": {k: cfg[k] for k in keys if k in cfg},
    }


def _load_open_clip(profile: Profile):
    """(model fp32 on CPU, image transform, tokenizer, hub id) via open_clip's own loaders."""
    model_id = resolve_vlm_id(profile)
    folder = local_folder(model_id)
    options: dict = {}
    if (folder / "open_clip_config.json").is_file():
        name, pretrained = f"local-dir:{folder}", None
    elif profile.vlm_pretrained and _bare_checkpoint(folder):
        # A downloaded tag repo without open_clip_config.json: the built-in architecture with
        # the tag's own activation and preprocessing, weights from the local file.
        name, pretrained = profile.vlm, str(_bare_checkpoint(folder))
        options = _tag_options(profile.vlm, profile.vlm_pretrained)
    elif profile.random_weights:
        raise missing_weights(profile, model_id, "VLM")
    elif profile.vlm_pretrained:
        name, pretrained = profile.vlm, profile.vlm_pretrained  # open_clip resolves tag -> hub
    else:
        name, pretrained = f"hf-hub:{model_id}", None
    try:
        # require_pretrained: open_clip would otherwise silently fall back to random weights.
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device="cpu", precision="fp32", require_pretrained=True, **options
        )
        tokenizer = open_clip.get_tokenizer(name)
    except _LOAD_ERRORS as exc:
        raise missing_weights(profile, model_id, "VLM", exc) from exc
    return model.eval(), preprocess, tokenizer, model_id


def _load_vision(profile: Profile):
    """(model fp32 on CPU, image processor) via transformers' own loaders."""
    folder = local_folder(profile.vision)
    if (folder / "config.json").is_file():
        source = str(folder)
    elif profile.random_weights:
        raise missing_weights(profile, profile.vision, "vision")
    else:
        source = profile.vision  # hub id: HF cache, or the hub unless HF_HUB_OFFLINE is set
    try:
        model = AutoModel.from_pretrained(source, dtype=torch.float32)
        processor = AutoImageProcessor.from_pretrained(source)
    except _LOAD_ERRORS as exc:
        raise missing_weights(profile, profile.vision, "vision", exc) from exc
    return model.eval(), processor


class Encoders:
    """Frozen VLM text/image and vision encoders of one profile on one device."""

    def __init__(self, profile: Profile, device: torch.device | str | None = None) -> None:
        apply_torch_threads()
        progress_bars_only_on_a_terminal()
        self.profile = profile
        self.device = resolve_device(profile, device if device is None else str(device))
        self.dtype = resolve_dtype(profile.encoder_dtype, self.device, "encoder")

        vlm, self._vlm_preprocess, self._tokenizer, self.vlm_id = _load_open_clip(profile)
        vision, self._vision_processor = _load_vision(profile)
        # Fingerprints from the fp32 CPU weights, before any cast: they identify the weights,
        # whatever device or precision later runs them.
        self._fingerprints = {
            "vlm": weights_fingerprint(vlm.state_dict().items()),
            "vision": weights_fingerprint(vision.state_dict().items()),
        }
        self._vlm = vlm.to(self.device, self.dtype)
        self._vision = vision.to(self.device, self.dtype)

        with torch.inference_mode():  # the joint embedding width, whatever the text tower
            probe = self._vlm.encode_text(self._tokenizer(["x"]).to(self.device))
        self.vlm_dim: int = int(probe.shape[-1])
        self._vision_spec = image_processor_spec(self._vision_processor)
        specs = (open_clip_spec(self._vlm), self._vision_spec)
        self._photo_specs = specs if None not in specs else None
        self.vision_dim: int = int(self._vision.config.hidden_size)
        self.fused_dim: int = self.vlm_dim + self.vision_dim

    # ------------------------------------------------------------------ text

    def _has_clip_text(self) -> bool:
        # The classic CLIP text tower (causal mask, EOT pooling, projection matrix).
        m = self._vlm
        return (
            isinstance(m, open_clip.CLIP)
            and getattr(m, "attn_mask", None) is not None
            and getattr(m, "text_pool_type", None) in ("argmax", "eos")
            and isinstance(getattr(m, "text_projection", None), torch.Tensor)
        )

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features for token ids (n, context_length), unnormalised."""
        m = self._vlm
        if not self._has_clip_text():
            return m.encode_text(tokens)
        # Same computation as CLIP.encode_text, but cut to the longest prompt in the batch.
        # The mask is causal and the feature is read at the end-of-text token, so the padding
        # after it never influences the result: the output is the same, 3-5x cheaper for
        # template prompts (~15 of 77 tokens).
        if m.text_pool_type == "argmax":
            ends = tokens.argmax(dim=-1)
        else:
            ends = (tokens == m.text_eos_id).int().argmax(dim=-1)
        length = int(ends.max()) + 1
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        return x @ m.text_projection

    def encode_text(self, queries: list[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """T(query), averaged over prompt templates: (len(queries), vlm_dim) float32, unit norm.

        ``templates`` are strings with one "{}" (None: the 80 CLIP ImageNet templates). Each
        prompt is encoded and normalised and the prompts of a query are averaged; the mean is
        normalised again (CLIP's zero-shot ensembling) unless the profile's ``text_mean`` is
        "plain", the authors' convention (`retrieval.engine.prompts`).
        """
        templates = CLIP_TEMPLATES if templates is None else tuple(templates)
        if not templates:
            raise ValueError("templates must not be empty (None means the 80 CLIP templates)")
        prompts = [t.replace("{}", q) for q in queries for t in templates]
        feats = []
        chunk = max(1, self.profile.batch_size) * 8  # text is cheap per item; fewer, larger calls
        with torch.inference_mode():
            for i in range(0, len(prompts), chunk):
                tokens = self._tokenizer(prompts[i : i + chunk]).to(self.device)
                feats.append(torch.nn.functional.normalize(self._encode_tokens(tokens).float(), dim=-1))
            if not feats:
                return np.zeros((0, self.vlm_dim), dtype=np.float32)
            per_prompt = torch.cat(feats).reshape(len(queries), len(templates), -1)
            return ensemble_templates(per_prompt.cpu().numpy(), self.profile.text_mean)

    # ------------------------------------------------------------------ images

    def _batches(self, images: Sequence[Image.Image]):
        step = max(1, self.profile.batch_size)
        for i in range(0, len(images), step):
            yield [im if im.mode == "RGB" else im.convert("RGB") for im in images[i : i + step]]

    def encode_vlm_images(self, images: list[Image.Image]) -> np.ndarray:
        """I(x): (len(images), vlm_dim) float32, unit norm; open_clip's own preprocessing."""
        out = [np.zeros((0, self.vlm_dim), dtype=np.float32)]
        with torch.inference_mode():
            for batch in self._batches(images):
                pixels = torch.stack([self._vlm_preprocess(im) for im in batch])
                out.append(_normalize(self._vlm.encode_image(pixels.to(self.device, self.dtype))))
        return np.concatenate(out)

    def encode_vision_images(self, images: list[Image.Image]) -> np.ndarray:
        """V(x): (len(images), vision_dim) float32, unit norm; the model's own image processor.

        The feature is the backbone's pooled output (DINOv2: the layer-normed CLS token).
        """
        out = [np.zeros((0, self.vision_dim), dtype=np.float32)]
        with torch.inference_mode():
            for batch in self._batches(images):
                pixels = self._vision_processor(images=batch, return_tensors="pt")["pixel_values"]
                result = self._vision(pixel_values=pixels.to(self.device, self.dtype))
                out.append(_normalize(result.pooler_output))
        return np.concatenate(out)

    @property
    def photo_specs(self) -> tuple[CropSpec, CropSpec] | None:
        """The (VLM, vision) crop specs of the libraries' own preprocessing, or None when
        photo_preprocessing does not reproduce one of them (then only the library path runs)."""
        return self._photo_specs

    def photo_preparer(self, threads: int, decoder: str | None = None, to_rgb: ToRGB = plain_rgb) -> PhotoBatchPreparer:
        """A preparer of photo batches for these encoders: pixels on their device, in their dtype
        (on a GPU: JPEGs decoded and resized there); `to_rgb` turns what Pillow decodes into 8-bit
        RGB. The caller closes it."""
        return PhotoBatchPreparer(self._photo_specs, self.device, self.dtype, threads, decoder, to_rgb)

    def encode_photo_pixels(self, vlm_pixels: torch.Tensor, vision_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I(x), V(x)) of preprocessed photos (`photo_specs`), unit-norm float32 tensors on the
        device, in one forward pass per encoder. On a GPU the passes are only queued: the caller
        can do other work (store the previous batch) before it reads them (`features_to_numpy`)."""
        with torch.inference_mode():
            if vlm_pixels.is_cuda:
                # Made on the preparer's stream: keep the memory from being reused under this one.
                vlm_pixels.record_stream(torch.cuda.current_stream(vlm_pixels.device))
                vision_pixels.record_stream(torch.cuda.current_stream(vision_pixels.device))
            vlm = self._vlm.encode_image(vlm_pixels.to(self.device, self.dtype))
            vision = self._vision(pixel_values=vision_pixels.to(self.device, self.dtype)).pooler_output
            return (torch.nn.functional.normalize(vlm.float(), dim=-1),
                    torch.nn.functional.normalize(vision.float(), dim=-1))

    def encode_prepared(self, prepared: PreparedPhotos) -> tuple[torch.Tensor, torch.Tensor]:
        """(I(x), V(x)) of a prepared batch's decoded photos, as `encode_photo_pixels` gives them."""
        if prepared.images is not None:  # encoders without specs: their libraries preprocess
            return (torch.from_numpy(self.encode_vlm_images(prepared.images)),
                    torch.from_numpy(self.encode_vision_images(prepared.images)))
        if prepared.vlm_pixels is None:
            return torch.zeros((0, self.vlm_dim)), torch.zeros((0, self.vision_dim))
        return self.encode_photo_pixels(prepared.vlm_pixels, prepared.vision_pixels)

    def encode_photos(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(I(x), V(x)) for library photos, with both encoders' preprocessing done in one
        batched pass (`photo_preprocessing`); the same vectors as `encode_vlm_images` and
        `encode_vision_images` up to resampling noise, at a fraction of the CPU time."""
        if self._photo_specs is None:
            return self.encode_vlm_images(images), self.encode_vision_images(images)
        vlm_spec, vision_spec = self._photo_specs
        vlm_out = [np.zeros((0, self.vlm_dim), dtype=np.float32)]
        vision_out = [np.zeros((0, self.vision_dim), dtype=np.float32)]
        for batch in self._batches(images):
            vlm, vision = features_to_numpy(self.encode_photo_pixels(to_pixels(batch, vlm_spec), to_pixels(batch, vision_spec)))
            vlm_out.append(vlm)
            vision_out.append(vision)
        return np.concatenate(vlm_out), np.concatenate(vision_out)

    def encode_vision_tensors(self, images: torch.Tensor) -> np.ndarray:
        """V(x) of images given as a (B, 3, H, W) float tensor in [0, 1] on any device (a
        generator's output): preprocessed by torch where they are (photo_preprocessing, the
        image processor's geometry and filter), no round trip through Pillow. (B, vision_dim)
        float32, unit norm."""
        spec = self._vision_spec
        if spec is None:  # a transform photo_preprocessing does not reproduce: the library's own
            return self.encode_vision_images(tensors_to_images(images))
        out = [np.zeros((0, self.vision_dim), dtype=np.float32)]
        with torch.inference_mode():
            step = max(1, self.profile.batch_size)
            for i in range(0, len(images), step):
                pixels = tensors_to_pixels(images[i : i + step].to(self.device), spec)
                out.append(_normalize(self._vision(pixel_values=pixels.to(self.dtype)).pooler_output))
        return np.concatenate(out)

    def warmup(self) -> None:
        """Run each encoder once so the first real request does not pay one-time kernel setup
        (oneDNN/cuDNN primitive creation, allocator growth): call it when a worker starts."""
        image = Image.new("RGB", (320, 240), (127, 127, 127))
        self.encode_text(["warm-up"])
        self.encode_vlm_images([image])
        self.encode_vision_images([image])

    # ------------------------------------------------------------------ identity

    def model_versions(self) -> dict[str, str]:
        """What made the vectors: ids, dims and weight fingerprints (not device or precision,
        which change vectors only within numerical noise)."""
        return {
            "vlm": self.vlm_id,
            "vlm_pretrained": self.profile.vlm_pretrained or "",
            "vlm_fingerprint": self._fingerprints["vlm"],
            "vlm_dim": str(self.vlm_dim),
            "vision": self.profile.vision,
            "vision_fingerprint": self._fingerprints["vision"],
            "vision_dim": str(self.vision_dim),
        }


def load_encoders(profile: Profile | str, device: str | None = None) -> Encoders:
    """The encoders of a profile, loaded once per process (same object on every call)."""
    return load_once(Encoders, profile, device)
