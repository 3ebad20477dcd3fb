"""Model side of the engine on the tiny profile: profiles, builder, encoders, generator."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.engine.model_folders import MissingWeightsError, model_dir
from retrieval.engine.profiles import PROFILES, resolve_vlm_id
from retrieval.engine.runtime import get_profile

REPO = Path(__file__).resolve().parents[2]


def _photos(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    # Varied sizes and modes, as real uploads are.
    out = []
    for i in range(n):
        h, w = 40 + 7 * i, 90 - 3 * i
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        out.append(im.convert("L") if i % 4 == 3 else im)
    return out


def _assert_unit_rows(x: np.ndarray, n: int, d: int) -> None:
    assert x.shape == (n, d)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------- profiles


def test_profiles_registry():
    for name in ("default", "paper", "tiny", "default-random", "paper-random"):
        assert PROFILES[name].name == name
    default, paper = PROFILES["default"], PROFILES["paper"]
    assert default.vlm == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert default.vision == "facebook/dinov2-small"
    assert default.generator == "stabilityai/sd-turbo"
    assert default.k == 4 and 1 <= default.steps <= 4
    assert (paper.vlm, paper.vlm_pretrained, paper.vision, paper.k) == ("ViT-L-14", "openai", "facebook/dinov2-large", 10)
    # Random twins keep the real settings, only the weights differ.
    twin = PROFILES["default-random"]
    assert (twin.k, twin.proxy_size, twin.steps) == (default.k, default.proxy_size, default.steps)
    assert twin.random_weights and not default.random_weights
    with pytest.raises(KeyError, match="unknown profile"):
        get_profile("nope")


def test_env_overrides_and_validation():
    env = {"CLETIR_PROXY_SIZE": "512", "CLETIR_PROXY_DECODER": "vae", "CLETIR_PROXY_STEPS": "2", "CLETIR_K": "6"}
    p = get_profile("default", environ=env)
    assert (p.proxy_size, p.decoder, p.steps, p.k) == (512, None, 2, 6)
    assert get_profile("default", environ={}) == PROFILES["default"]
    with pytest.raises(ValueError, match="steps"):
        get_profile("default", environ={"CLETIR_PROXY_STEPS": "8"})
    with pytest.raises(ValueError, match="multiple of 64"):
        get_profile("default", environ={"CLETIR_PROXY_SIZE": "300"})


def test_text_mean_convention_per_profile():
    # cletir re-normalises the template mean; the paper profile runs the authors' plain mean.
    assert PROFILES["default"].text_mean == "normalized" and PROFILES["tiny"].text_mean == "normalized"
    assert PROFILES["paper"].text_mean == "plain" and PROFILES["paper-random"].text_mean == "plain"
    assert get_profile("default", environ={"CLETIR_TEXT_MEAN": " Plain"}).text_mean == "plain"
    with pytest.raises(ValueError, match="text_mean must be one of normalized, plain"):
        get_profile("default", environ={"CLETIR_TEXT_MEAN": "median"})


def test_model_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLETIR_MODEL_DIR", str(tmp_path))
    assert model_dir() == tmp_path
    monkeypatch.delenv("CLETIR_MODEL_DIR")
    assert model_dir() == Path.home() / ".cache" / "cletir" / "models"


def test_vlm_tag_resolves_to_open_clip_hub_repo():
    assert resolve_vlm_id(PROFILES["paper"]) == "timm/vit_large_patch14_clip_224.openai"
    assert resolve_vlm_id(PROFILES["default"]) == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


# ---------------------------------------------------------------------------- builder


def test_build_is_deterministic_and_skips_when_present(tiny_model_dir, tmp_path):
    from retrieval.engine.build_models import STAMP, build_profile

    def digests(root: Path) -> dict[str, str]:
        return {
            mid: json.loads((root / mid / STAMP).read_text())["sha256"]
            for mid in PROFILES["tiny"].model_ids().values()
        }

    build_profile("tiny", tmp_path)
    assert digests(tmp_path) == digests(tiny_model_dir)
    total = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert total < 12 * 2**20  # "a few MB"
    weights = tmp_path / "cletir-tiny/open-clip/open_clip_model.safetensors"
    before = weights.stat().st_mtime_ns
    build_profile("tiny", tmp_path)  # present and stamped: nothing is rewritten
    assert weights.stat().st_mtime_ns == before


def test_built_folders_load_with_the_libraries_own_loaders(tiny_model_dir):
    import open_clip
    from diffusers import AutoPipelineForText2Image
    from transformers import AutoImageProcessor, AutoModel

    model, _, _ = open_clip.create_model_and_transforms(
        f"local-dir:{tiny_model_dir / 'cletir-tiny/open-clip'}", require_pretrained=True
    )
    assert model.text_projection.shape[-1] == 32
    assert AutoModel.from_pretrained(tiny_model_dir / "cletir-tiny/dinov2").config.model_type == "dinov2"
    AutoImageProcessor.from_pretrained(tiny_model_dir / "cletir-tiny/dinov2")
    pipe = AutoPipelineForText2Image.from_pretrained(tiny_model_dir / "cletir-tiny/sd-turbo")
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_generator_tokenizer_is_the_real_clip_bpe(tiny_generator):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    # ("!" is left out: SD 2's tokenizer registers it as the pad token, a quirk of the real one.)
    for text in ["a photo of a golden retriever.", "Crème brûlée, 2 spoons & a café-au-lait."]:
        ids = tiny_generator.pipe.tokenizer(text).input_ids
        expected = reference([text])[0]
        assert ids == expected[: len(ids)].tolist()
        assert ids[0] == 49406 and ids[-1] == 49407


# ---------------------------------------------------------------------------- encoders


def test_encoders_dims_and_cache(tiny_encoders):
    from retrieval.engine.encoders import load_encoders

    e = tiny_encoders
    assert (e.vlm_dim, e.vision_dim, e.fused_dim) == (32, 32, 64)
    assert str(e.device) == "cpu"
    assert load_encoders("tiny", device="cpu") is e


def test_encode_text_shapes_and_norm(tiny_encoders):
    _assert_unit_rows(tiny_encoders.encode_text(["golden retriever", "a sailboat at sea", "Persian cat"]), 3, 32)
    _assert_unit_rows(tiny_encoders.encode_text([]), 0, 32)


def test_template_ensembling(tiny_encoders):
    from retrieval.engine.encoders import CLIP_TEMPLATES

    e = tiny_encoders
    assert len(CLIP_TEMPLATES) == 80 and all(t.count("{}") == 1 for t in CLIP_TEMPLATES)
    many = e.encode_text(["golden retriever"])
    one = e.encode_text(["golden retriever"], templates=["a photo of a {}."])
    _assert_unit_rows(one, 1, 32)
    assert not np.allclose(many, one, atol=1e-3)
    # One template is just the normalised feature of that prompt.
    np.testing.assert_allclose(one, e.encode_text(["a photo of a golden retriever."], templates=["{}"]), atol=1e-6)
    # The ensemble is the normalised mean of the normalised per-template features.
    per = np.concatenate([e.encode_text(["golden retriever"], templates=[t]) for t in CLIP_TEMPLATES])
    mean = per.mean(axis=0)
    np.testing.assert_allclose(many[0], mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(ValueError):
        e.encode_text(["x"], templates=[])


def test_plain_text_mean_is_the_authors_unnormalised_mean(tiny_model_dir, tiny_encoders):
    import dataclasses

    from retrieval.engine.encoders import CLIP_TEMPLATES, Encoders

    plain = Encoders(dataclasses.replace(tiny_encoders.profile, text_mean="plain"), "cpu")
    per = np.concatenate([tiny_encoders.encode_text(["golden retriever"], templates=[t]) for t in CLIP_TEMPLATES])
    t = plain.encode_text(["golden retriever"])[0]
    np.testing.assert_allclose(t, per.mean(axis=0), atol=1e-5)
    assert np.linalg.norm(t) < 0.999  # the templates disagree: shorter than a unit vector
    # Same direction as cletir's convention; one template is the same vector either way.
    np.testing.assert_allclose(t / np.linalg.norm(t), tiny_encoders.encode_text(["golden retriever"])[0], atol=1e-5)
    one = ["a photo of a {}."]
    np.testing.assert_allclose(plain.encode_text(["dog"], one), tiny_encoders.encode_text(["dog"], one), atol=1e-6)


def test_text_truncation_matches_open_clip(tiny_encoders):
    import torch

    e = tiny_encoders
    tokens = e._tokenizer(["a dog.", "a photo of the hard to see golden retriever on a very long beach."])
    with torch.inference_mode():
        full = e._vlm.encode_text(tokens)
        cut = e._encode_tokens(tokens)
    np.testing.assert_allclose(cut.numpy(), full.numpy(), atol=1e-5)


def test_text_batch_equals_single(tiny_encoders):
    e = tiny_encoders
    both = e.encode_text(["dog", "a sailboat at sea"])
    np.testing.assert_allclose(both[1], e.encode_text(["a sailboat at sea"])[0], atol=1e-5)


@pytest.mark.parametrize("which", ["vlm", "vision"])
def test_image_encoders(tiny_encoders, which):
    e = tiny_encoders
    encode = e.encode_vlm_images if which == "vlm" else e.encode_vision_images
    dim = e.vlm_dim if which == "vlm" else e.vision_dim
    photos = _photos(11)  # crosses the tiny profile's batch size of 8
    out = encode(photos)
    _assert_unit_rows(out, 11, dim)
    # Batching does not change a photo's vector.
    np.testing.assert_allclose(out[9:10], encode(photos[9:10]), atol=1e-5)
    np.testing.assert_allclose(out[3:4], encode([photos[3]]), atol=1e-5)
    assert not np.allclose(out[0], out[1])
    _assert_unit_rows(encode([]), 0, dim)


def test_model_versions_identify_the_weights(tiny_encoders, tiny_model_dir):
    from retrieval.engine.encoders import Encoders

    v = tiny_encoders.model_versions()
    assert v["vlm"] == "cletir-tiny/open-clip" and v["vision"] == "cletir-tiny/dinov2"
    assert (v["vlm_dim"], v["vision_dim"]) == ("32", "32")
    assert all(isinstance(x, str) for x in v.values())
    assert Encoders(PROFILES["tiny"], "cpu").model_versions() == v  # stable across loads
    assert len({v["vlm_fingerprint"], v["vision_fingerprint"]}) == 2


# ---------------------------------------------------------------------------- generator


def _arrays(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.int16) for im in images]


def test_generator_shapes(tiny_generator):
    images = tiny_generator.generate("golden retriever", [1, 2, 3, 4])
    assert len(images) == 4
    assert all(im.size == (64, 64) and im.mode == "RGB" for im in images)
    assert tiny_generator.generate("golden retriever", []) == []
    assert tiny_generator.prompt("golden retriever") == "a photo of a golden retriever."


def test_generator_determinism_per_seed(tiny_generator):
    a = _arrays(tiny_generator.generate("golden retriever", [11, 12, 13]))
    b = _arrays(tiny_generator.generate("golden retriever", [11, 12, 13]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # different seeds, different images
    # Image i depends only on seeds[i]: a batch equals the single-seed calls.
    single = _arrays(tiny_generator.generate("golden retriever", [13]))[0]
    assert np.abs(single - a[2]).max() <= 1
    reordered = _arrays(tiny_generator.generate("golden retriever", [13, 11]))
    assert np.abs(reordered[1] - a[0]).max() <= 1


def test_proxy_tensors_reach_the_vision_encoder_without_pillow(tiny_generator, tiny_encoders):
    import torch

    tensors = tiny_generator.generate_tensors("golden retriever", [1, 2, 3])
    assert tensors.shape == (3, 3, 64, 64) and tensors.dtype == torch.float32
    assert 0 <= tensors.min().item() and tensors.max().item() <= 1
    # The Pillow images are these tensors rounded to 8 bits.
    pictures = tiny_generator.generate("golden retriever", [1, 2, 3])
    assert all(np.abs(np.asarray(p, dtype=float) - t.permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-3
               for p, t in zip(pictures, tensors))
    # Features from the tensors = the image processor's on the Pillow images, up to the rounding.
    direct = tiny_encoders.encode_vision_tensors(tensors)
    through_pillow = tiny_encoders.encode_vision_images(pictures)
    assert direct.shape == (3, tiny_encoders.vision_dim)
    assert (direct * through_pillow).sum(axis=1).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1, atol=1e-5)


def test_generator_makes_one_batched_pipeline_call(tiny_generator):
    calls = []
    hook = tiny_generator.pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        tiny_generator.generate("sailboat", [1, 2, 3, 4])
    finally:
        hook.remove()
    assert calls == [4] * tiny_generator.profile.steps


def test_generator_full_vae_path(tiny_model_dir):
    from retrieval.engine.generator import ProxyGenerator

    gen = ProxyGenerator(dataclasses.replace(PROFILES["tiny"], decoder=None, steps=2), "cpu")
    assert type(gen.pipe.vae).__name__ == "AutoencoderKL"
    images = gen.generate("sailboat", [5, 6])
    assert [im.size for im in images] == [(64, 64)] * 2
    assert gen.model_versions()["decoder"] == "vae"


def test_generator_model_versions(tiny_generator):
    v = tiny_generator.model_versions()
    assert v["generator"] == "cletir-tiny/sd-turbo" and v["decoder"] == "cletir-tiny/taesd"
    assert (v["proxy_size"], v["steps"], v["dtype"]) == ("64", "1", "float32")


# ---------------------------------------------------------------------------- missing weights


def test_missing_random_weights_name_folder_id_and_command(tmp_path, monkeypatch, tiny_model_dir):
    from retrieval.engine.encoders import Encoders
    from retrieval.engine.generator import ProxyGenerator

    monkeypatch.setenv("CLETIR_MODEL_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        Encoders(PROFILES["tiny"], "cpu")
    msg = str(err.value)
    assert str(tmp_path / "cletir-tiny/open-clip") in msg and "build_models --profile tiny" in msg
    with pytest.raises(MissingWeightsError, match="cletir-tiny/sd-turbo"):
        ProxyGenerator(PROFILES["tiny"], "cpu")
    assert issubclass(MissingWeightsError, RuntimeError)


def test_missing_hub_weights_offline(tmp_path, monkeypatch, tiny_model_dir):
    """Real ids, no local folder, empty HF cache, HF_HUB_OFFLINE: a clear error, no network."""
    import huggingface_hub.constants as hf_constants

    from retrieval.engine.encoders import Encoders
    from retrieval.engine.generator import ProxyGenerator

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CLETIR_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(MissingWeightsError) as err:
        Encoders(PROFILES["default"], "cpu")
    msg = str(err.value)
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg and str(tmp_path / "models") in msg
    assert "hf download" in msg

    # Vision and generator, through transformers' and diffusers' hub paths.
    monkeypatch.setenv("CLETIR_MODEL_DIR", str(tiny_model_dir))
    real_vision = dataclasses.replace(PROFILES["tiny"], vision="facebook/dinov2-small", random_weights=False)
    with pytest.raises(MissingWeightsError, match="facebook/dinov2-small"):
        Encoders(real_vision, "cpu")
    real_gen = dataclasses.replace(PROFILES["tiny"], generator="stabilityai/sd-turbo", random_weights=False)
    with pytest.raises(MissingWeightsError, match="stabilityai/sd-turbo"):
        ProxyGenerator(real_gen, "cpu")


# ---------------------------------------------------------------------------- isolation


def test_engine_imports_no_django():
    """Every retrieval.engine module imports without pulling in Django (or needing it)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import retrieval.engine as pkg\n"
        "assert 'torch' not in sys.modules, 'retrieval.engine must import nothing heavy'\n"
        "import retrieval.engine.profiles, retrieval.engine.runtime, retrieval.engine.model_folders\n"
        "import retrieval.engine.fingerprints, retrieval.engine.model_cache\n"
        "assert 'torch' not in sys.modules, 'profiles and their run-time helpers must import nothing heavy'\n"
        "names = [m.name for m in pkgutil.iter_modules(pkg.__path__, 'retrieval.engine.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "assert 'retrieval.engine.encoders' in sys.modules and 'retrieval.engine.generator' in sys.modules\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_tag_profile_options_follow_open_clip_tag():
    """A bare downloaded checkpoint of an arch+tag profile gets the tag's activation and preprocessing."""
    from retrieval.engine.encoders import _tag_options

    opts = _tag_options("ViT-L-14", "openai")
    assert opts["force_quick_gelu"] is True
    assert opts["force_preprocess_cfg"].get("mean") in (None, (0.48145466, 0.4578275, 0.40821073), [0.48145466, 0.4578275, 0.40821073])
    assert _tag_options("ViT-B-32", "laion2b_s34b_b79k")["force_quick_gelu"] is False
