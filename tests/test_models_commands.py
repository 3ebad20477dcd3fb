"""manage.py models / fetch_models / train_aggregator, with no network.

A local folder stands in for the hub: one folder per hub id with the repo's files (including
ones the loaders never read, which must not be fetched) and a manifest giving the checksums the
hub publishes (sha256 for LFS files, the git blob sha1 for small ones).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from retrieval.engine.profiles import PROFILES, resolve_vlm_id
from retrieval.weights import MANIFEST, HubSource, MirrorSource, fetch_model

PROJECT_DIR = Path(__file__).resolve().parent.parent
REVISION = "0123456789abcdef0123456789abcdef01234567"
MB = 1_000_000

# Every file of the four `default` repos on the stand-in hub, with its size. Files marked False
# are ones the loaders never read (other formats, fp16 variants, single-file checkpoints, docs).
HUB_FILES: dict[str, dict[str, tuple[int, bool]]] = {
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": {
        "open_clip_config.json": (300, True),
        "open_clip_model.safetensors": (3 * MB, True),
        "open_clip_pytorch_model.bin": (2 * MB, False),
        "README.md": (100, False),
    },
    "facebook/dinov2-small": {
        "config.json": (200, True),
        "preprocessor_config.json": (150, True),
        "model.safetensors": (2 * MB + 17, True),
        "pytorch_model.bin": (MB, False),
    },
    "stabilityai/sd-turbo": {
        "model_index.json": (400, True),
        "sd_turbo.safetensors": (MB, False),
        "scheduler/scheduler_config.json": (120, True),
        "text_encoder/config.json": (220, True),
        "text_encoder/model.safetensors": (MB, True),
        "text_encoder/model.fp16.safetensors": (MB // 2, False),
        "tokenizer/vocab.json": (5000, True),
        "unet/config.json": (330, True),
        "unet/diffusion_pytorch_model.safetensors": (3 * MB, True),
        "unet/diffusion_pytorch_model.fp16.safetensors": (MB, False),
        "vae/config.json": (180, True),
        "vae/diffusion_pytorch_model.safetensors": (MB, True),
    },
    "madebyollin/taesd": {
        "config.json": (160, True),
        "diffusion_pytorch_model.safetensors": (MB + 3, True),
        "taesd_decoder.pth": (MB, False),
    },
}


def _is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".bin", ".pth"))


def _content(repo_id: str, path: str, size: int) -> bytes:
    seed = zlib.crc32(f"{repo_id}/{path}".encode())
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def git_blob_sha1_of(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hub_entry(data: bytes, path: str) -> dict:
    if _is_lfs(path):
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"size": len(data), "git_sha1": git_blob_sha1_of(data)}


@pytest.fixture
def hub(tmp_path) -> Path:
    """The stand-in hub: files plus the hub's checksum metadata as a manifest per repo."""
    root = tmp_path / "hub"
    for repo_id, files in HUB_FILES.items():
        entries = {}
        for path, (size, _) in files.items():
            data = _content(repo_id, path, size)
            target = root / repo_id / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            entries[path] = _hub_entry(data, path)
        (root / repo_id / MANIFEST).write_text(json.dumps({"revision": REVISION, "files": entries}))
    return root


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("CLETIR_MODEL_DIR", str(root))
    return root


@pytest.fixture
def fetch_calls(monkeypatch) -> list[tuple[str, str]]:
    """(repo id, file) of every file the mirror source is asked for."""
    calls: list[tuple[str, str]] = []
    original = MirrorSource.fetch

    def recording(self, repo_id, revision, file, folder, progress):
        calls.append((repo_id, file.path))
        return original(self, repo_id, revision, file, folder, progress)

    monkeypatch.setattr(MirrorSource, "fetch", recording)
    return calls


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _needed(repo_id: str) -> list[str]:
    return sorted(p for p, (_, needed) in HUB_FILES[repo_id].items() if needed)


def _summary(output: str) -> list[str]:
    return [line for line in output.splitlines() if "@0123456789ab:" in line]


def test_fetch_models_downloads_the_needed_files_and_verifies_them(hub, models_dir, fetch_calls):
    output = _run("fetch_models", "--profile", "default", "--source", str(hub))

    assert _summary(output) == [
        "vlm laion/CLIP-ViT-B-32-laion2B-s34B-b79K@0123456789ab: 2 files, 3.0 MB; fetched 2 (resumed 0), "
        "already present 0, checksum mismatches 0",
        "vision facebook/dinov2-small@0123456789ab: 3 files, 2.0 MB; fetched 3 (resumed 0), already present 0, "
        "checksum mismatches 0",
        "generator stabilityai/sd-turbo@0123456789ab: 9 files, 5.0 MB; fetched 9 (resumed 0), already present 0, "
        "checksum mismatches 0",
        "decoder madebyollin/taesd@0123456789ab: 2 files, 1.0 MB; fetched 2 (resumed 0), already present 0, "
        "checksum mismatches 0",
    ]
    assert output.splitlines()[-1] == (
        "profile default: all weights present and verified; activate it with `manage.py activate_profile default`"
    )
    assert fetch_calls == [(repo, path) for repo in HUB_FILES for path in _needed(repo)]
    for repo_id, files in HUB_FILES.items():
        folder = models_dir / repo_id
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
        assert on_disk == _needed(repo_id)
        for path in on_disk:
            assert (folder / path).read_bytes() == (hub / repo_id / path).read_bytes()
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["complete"] is True and manifest["revision"] == REVISION
        assert sorted(manifest["files"]) == _needed(repo_id)
        # Every file gets a sha256, also the small ones the hub identifies by git sha1 only.
        for path, entry in manifest["files"].items():
            assert entry["sha256"] == hashlib.sha256((folder / path).read_bytes()).hexdigest()


def test_fetch_models_resumes_fetching_only_what_is_missing(hub, models_dir, fetch_calls):
    _run("fetch_models", "--profile", "default", "--source", str(hub))
    fetch_calls.clear()
    # A deleted file, and an interrupted download: the unet weights half written.
    (models_dir / "facebook/dinov2-small/model.safetensors").unlink()
    unet = models_dir / "stabilityai/sd-turbo/unet/diffusion_pytorch_model.safetensors"
    data = unet.read_bytes()
    unet.unlink()
    unet.with_name(unet.name + ".part").write_bytes(data[: 1_500_000])

    output = _run("fetch_models", "--profile", "default", "--source", str(hub))

    assert fetch_calls == [
        ("facebook/dinov2-small", "model.safetensors"),
        ("stabilityai/sd-turbo", "unet/diffusion_pytorch_model.safetensors"),
    ]
    assert [line for line in output.splitlines() if line.startswith("[")] == [
        "[2/3] facebook/dinov2-small/model.safetensors (2.0 MB)",
        "[7/9] stabilityai/sd-turbo/unet/diffusion_pytorch_model.safetensors (3.0 MB), resuming at 1.5 MB",
    ]
    assert _summary(output)[1:3] == [
        "vision facebook/dinov2-small@0123456789ab: 3 files, 2.0 MB; fetched 1 (resumed 0), already present 2, "
        "checksum mismatches 0",
        "generator stabilityai/sd-turbo@0123456789ab: 9 files, 5.0 MB; fetched 1 (resumed 1), already present 8, "
        "checksum mismatches 0",
    ]
    assert unet.read_bytes() == data
    assert not unet.with_name(unet.name + ".part").exists()


def test_fetch_models_reports_a_checksum_mismatch_and_exits_non_zero(hub, models_dir):
    bad = hub / "madebyollin/taesd/diffusion_pytorch_model.safetensors"
    expected = hashlib.sha256(bad.read_bytes()).hexdigest()
    corrupted = bytearray(bad.read_bytes())
    corrupted[1000] ^= 0xFF
    bad.write_bytes(bytes(corrupted))
    actual = hashlib.sha256(bytes(corrupted)).hexdigest()

    result = subprocess.run(
        [sys.executable, "manage.py", "fetch_models", "--profile", "default", "--source", str(hub)],
        cwd=PROJECT_DIR, env={**os.environ, "DJANGO_DEBUG": "1"}, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: checksum mismatch in 1 file(s); they were removed, run fetch_models again "
        "(with --source, replace the mirror's copy first):",
        f"  madebyollin/taesd/diffusion_pytorch_model.safetensors: sha256 {actual}, expected {expected}",
    ]
    assert "decoder madebyollin/taesd@0123456789ab: 2 files, 1.0 MB; fetched 1 (resumed 0), already present 0, " \
           "checksum mismatches 1" in result.stdout
    folder = models_dir / "madebyollin/taesd"
    assert not (folder / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((folder / MANIFEST).read_text())["complete"] is False

    listing = _run("models", "--profile", "default")
    assert f"  decoder   madebyollin/taesd: local folder {folder}, 160 B (incomplete: 1 of 2 files)" in listing
    assert "default (real weights): MISSING" in listing


def test_fetch_models_refuses_random_profiles_and_an_offline_hub(models_dir, monkeypatch):
    with pytest.raises(CommandError) as refused:
        _run("fetch_models", "--profile", "tiny")
    assert str(refused.value) == (
        "profile 'tiny' uses random weights that cletir builds itself; there is nothing to download. "
        "Build them with `python -m retrieval.engine.build_models --profile tiny`."
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CommandError, match=r"^HF_HUB_OFFLINE is set, so the hub must not be contacted\."):
        _run("fetch_models", "--profile", "default")


def test_hub_source_checks_lfs_sha256_and_git_sha1(tmp_path):
    """The real hub path, with huggingface_hub's API answer and download made locally."""
    from huggingface_hub.hf_api import ModelInfo

    files = {"config.json": b'{"hidden_size": 8}', "model.safetensors": b"w" * 5000, "pytorch_model.bin": b"b" * 10}
    siblings = []
    for path, data in files.items():
        sibling = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1_of(data)}
        if path.endswith((".safetensors", ".bin")):
            sibling.update(blobId="pointer-blob-id", lfs={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 130})
        siblings.append(sibling)

    class Api:
        def model_info(self, repo_id, files_metadata):
            assert (repo_id, files_metadata) == ("facebook/dinov2-small", True)
            return ModelInfo(id=repo_id, sha=REVISION, siblings=siblings)

    downloads = []

    def download(repo_id, filename, revision, local_dir):
        downloads.append((filename, revision))
        target = Path(local_dir) / filename
        # The hub's copy of config.json was changed in flight: its git sha1 must catch it.
        target.write_bytes(files[filename] + (b" " if filename == "config.json" else b""))
        return str(target)

    result = fetch_model(HubSource(Api(), download), "vision", "facebook/dinov2-small", tmp_path / "m")

    assert downloads == [("config.json", REVISION), ("model.safetensors", REVISION)]
    assert [(f.path, f.state) for f in result.files] == [("config.json", "mismatch"), ("model.safetensors", "fetched")]
    assert result.files[0].problem == "size 19 bytes, expected 18"
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["complete"] is False
    # LFS files are checked by the content's sha256, small files by their git blob sha1.
    assert manifest["files"] == {
        "config.json": {"size": 18, "git_sha1": git_blob_sha1_of(files["config.json"])},
        "model.safetensors": {"size": 5000, "sha256": hashlib.sha256(files["model.safetensors"]).hexdigest()},
    }


@pytest.mark.django_db
def test_activate_profile_falls_back_to_tiny_and_says_why_in_one_line(tiny_model_dir):
    out, err = StringIO(), StringIO()
    call_command("activate_profile", "default", "--fallback-tiny", stdout=out, stderr=err)
    assert out.getvalue().splitlines()[0] == (
        f"Models: 'tiny' random-weight demo models (meaningless results), because the 'default' profile's weights "
        f"are not in {tiny_model_dir}; README \"Models and real weights\" says how to add them.")
    assert out.getvalue().splitlines()[1].startswith("active space: tiny (")
    # The loaders' reasons stay available, on stderr (`make demo` keeps them in its log file).
    assert err.getvalue().startswith(
        "No weights for the 'default' profile, so the 'tiny' models are used: VLM weights for profile 'default' "
        f"not found: no local folder {tiny_model_dir / 'laion/CLIP-ViT-B-32-laion2B-s34B-b79K'}")


def test_weights_tooling_imports_no_django_and_no_torch():
    """retrieval.weights left the engine but stays usable without Django or torch (a copy
    script, an air-gapped site's check)."""
    code = (
        "import sys\n"
        "import retrieval.weights\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'torch'))\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_models_lists_profiles_and_where_their_weights_are(hub, models_dir, tiny_model_dir, monkeypatch):
    import shutil

    _run("fetch_models", "--profile", "default", "--source", str(hub))
    shutil.copytree(tiny_model_dir / "cletir-tiny", models_dir / "cletir-tiny")
    cache_folder = Path("/hf-cache/models--facebook--dinov2-large")
    monkeypatch.setattr("retrieval.management.commands.models.hub_cache_sizes",
                        lambda: {"facebook/dinov2-large": (cache_folder, 1_220_000_000)})

    lines = _run("models").splitlines()

    paper_vlm = resolve_vlm_id(PROFILES["paper"])

    def size(repo_id: str) -> str:
        from retrieval.weights import folder_size, human_size

        return human_size(folder_size(models_dir / repo_id))

    assert lines[0] == f"model folder: {models_dir}"
    assert lines[1:8] == [
        "",
        "default (real weights): present",
        f"  vlm       laion/CLIP-ViT-B-32-laion2B-s34B-b79K: local folder {models_dir}/laion/CLIP-ViT-B-32-laion2B-s34B-b79K, 3.0 MB",
        f"  vision    facebook/dinov2-small: local folder {models_dir}/facebook/dinov2-small, 2.0 MB",
        f"  generator stabilityai/sd-turbo: local folder {models_dir}/stabilityai/sd-turbo, 5.0 MB",
        f"  decoder   madebyollin/taesd: local folder {models_dir}/madebyollin/taesd, 1.0 MB",
        "",
    ]
    assert lines[8:14] == [
        "paper (real weights): MISSING",
        f"  vlm       {paper_vlm}: missing",
        f"  vision    facebook/dinov2-large: HF cache {cache_folder}, 1.2 GB",
        "  generator stabilityai/sd-turbo: local folder "
        f"{models_dir}/stabilityai/sd-turbo, 5.0 MB",
        "  get them with: manage.py fetch_models --profile paper",
        "",
    ]
    tiny = lines[lines.index("tiny (random weights, built locally): present"):][:5]
    assert tiny[1:] == [
        f"  {role:9s} {repo}: local folder {models_dir}/{repo}, {size(repo)}"
        for role, repo in PROFILES["tiny"].model_ids().items()
    ]
    assert "default-random (random weights, built locally): MISSING" in lines
    assert "  get them with: python -m retrieval.engine.build_models --profile default-random" in lines


def test_models_verify_finds_a_damaged_copy(hub, models_dir):
    _run("fetch_models", "--profile", "default", "--source", str(hub))
    damaged = models_dir / "facebook/dinov2-small/model.safetensors"
    data = bytearray(damaged.read_bytes())
    data[0] ^= 1
    damaged.write_bytes(bytes(data))

    with pytest.raises(CommandError) as failed:
        _run("models", "--profile", "default", "--verify")

    expected = json.loads((damaged.parent / MANIFEST).read_text())["files"]["model.safetensors"]["sha256"]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(failed.value) == (
        "weights differ from their manifest:\n"
        f"  facebook/dinov2-small/model.safetensors: sha256 {actual}, expected {expected}"
    )


# ---------------------------------------------------------------------------- train_aggregator


def _labelled_folder(root: Path) -> Path:
    """Six categories of eight small photos each, told apart by colour and texture."""
    rng = np.random.default_rng(0)
    colours = {"red_apple": (200, 30, 30), "green_field": (40, 180, 60), "blue_sky": (50, 90, 220),
               "yellow_taxi": (230, 210, 40), "black_cat": (20, 20, 20), "white_snow": (235, 235, 240)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def tiny_active_space(tiny_model_dir, db, media_root):
    from retrieval.models import EmbeddingSpace
    from retrieval.indexing.spaces import space_for_profile

    space = space_for_profile("tiny")
    EmbeddingSpace.objects.filter(pk=space.pk).update(is_active=True, is_serving=True)
    space.refresh_from_db()
    return space


def test_train_aggregator_saves_the_network_for_the_active_space(tiny_active_space, media_root, tmp_path):
    from retrieval.engine.aggregator import read_aggregator_metadata
    from retrieval.search.inputs import space_aggregator

    folder = _labelled_folder(tmp_path / "photos")
    curves = tmp_path / "reports" / "curves.png"
    output = _run("train_aggregator", str(folder), "--k", "2", "--epochs", "3", "--seed", "1", "--force",
                  "--pr-curves", str(curves))

    space = tiny_active_space
    space.refresh_from_db()
    assert space.aggregator_file.name.startswith(f"aggregators/space{space.pk}-")
    assert space.aggregator_architecture == "cletir"
    path = media_root / space.aggregator_file.name
    assert path.is_file()
    lines = output.splitlines()
    assert lines[0] == f"space {space} (profile tiny): 6 categories, 48 photos, K=2, seed 1"
    before = lines.index("Before (mean pooling):")
    assert lines[before + 1:before + 3] == ["| method | mAP |", "|---|---|"]
    assert [row.split(" | ")[0] for row in lines[before + 3:before + 6]] == [
        "| text only (λ=0)", "| proxies only (mean, λ=1)", "| text + mean proxies (λ=0.50)"]
    after = next(i for i, line in enumerate(lines) if line.startswith("After (trained cletir aggregator, best epoch "))
    net = space_aggregator(space)
    assert net is not None  # the product accepts it for this space
    assert [row.split(" | ")[0] for row in lines[after + 3:after + 5]] == [
        "| proxies only (aggregator, λ=1)", f"| text + aggregator (learned λ={net.lam():.2f})"]
    assert lines[-1] == f"saved {path}; space {space} now aggregates proxies with it (λ={net.lam():.3f})"
    assert lines[after + 5:after + 7] == ["", f"precision-recall curves: {curves}"]
    with Image.open(curves) as image:
        assert (image.format, image.size) == ("PNG", (800, 560))
    metadata = read_aggregator_metadata(path)
    assert json.loads(metadata["config"])["vision_model"] == space.vision_model
    assert metadata["space_fingerprint"] == space.fingerprint
    assert metadata["seed"] == "1"
    assert sorted(json.loads(metadata["train_categories"]) + json.loads(metadata["val_categories"])) == [
        "black cat", "blue sky", "green field", "red apple", "white snow", "yellow taxi"]


def test_train_aggregator_refuses_a_network_that_does_not_beat_mean_pooling(tiny_active_space, media_root,
                                                                          tmp_path, monkeypatch):
    import dataclasses

    from retrieval.engine import train

    real = train.train_aggregator

    def unbeatable(*args, **kwargs):
        # Mean pooling already ranks perfectly on the held-out categories: nothing can beat it.
        return dataclasses.replace(real(*args, **kwargs), baseline_val_map=1.0)

    monkeypatch.setattr("retrieval.management.commands.train_aggregator.train_aggregator", unbeatable)
    folder = _labelled_folder(tmp_path / "photos")

    with pytest.raises(CommandError) as refused:
        _run("train_aggregator", str(folder), "--k", "2", "--epochs", "2", "--pr-curves", str(tmp_path / "pr.png"))
    assert (tmp_path / "pr.png").is_file()  # the curves are written whether or not the network is kept

    assert str(refused.value).endswith(
        "does not beat mean pooling with λ=0.5 (1.0000) on the held-out categories; nothing saved, search keeps "
        "the mean. Use --force to save it anyway."
    )
    tiny_active_space.refresh_from_db()
    assert tiny_active_space.aggregator_file.name == ""
    assert not (media_root / "aggregators").exists()


def test_train_aggregator_refuses_a_template_file_it_cannot_use(tiny_active_space, tmp_path):
    (tmp_path / "templates.txt").write_text("a photo of a dog.\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"line 1: template 'a photo of a dog.' has no \{\}"):
        _run("train_aggregator", str(_labelled_folder(tmp_path / "photos")), "--templates", str(tmp_path / "templates.txt"))


def test_train_aggregator_needs_an_active_space(db, tmp_path):
    with pytest.raises(CommandError) as refused:
        _run("train_aggregator", str(_labelled_folder(tmp_path / "photos")))
    assert str(refused.value) == "no active embedding space: activate a profile first (manage.py activate_profile)"


# ---------------------------------------------------------------------------- load_aggregator


def _authors_checkpoint(path: Path, width: int, seed: int = 0):
    """A model.pth as the authors' code saves it, from a replica of their module structure,
    with every weight moved off its init as training would."""
    import torch

    from tests.engine.authors_replica import authors_model, save_authors_checkpoint

    torch.manual_seed(seed)
    model = authors_model(width)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_authors_checkpoint(model, path)
    return model.eval()


def test_load_aggregator_uses_the_authors_checkpoint_for_the_active_space(tiny_active_space, media_root, tmp_path):
    import torch

    from retrieval.engine.aggregator import PaperAggregatorNet, read_aggregator_metadata
    from retrieval.search.inputs import space_aggregator

    space = tiny_active_space
    authors = _authors_checkpoint(tmp_path / "model.pth", space.vision_dim)
    out, err = StringIO(), StringIO()
    call_command("load_aggregator", str(tmp_path / "model.pth"), stdout=out, stderr=err)

    space.refresh_from_db()
    assert space.aggregator_architecture == "paper"
    assert space.aggregator_file.name.startswith(f"aggregators/space{space.pk}-authors-")
    path = media_root / space.aggregator_file.name
    net = space_aggregator(space)
    assert isinstance(net, PaperAggregatorNet)
    assert out.getvalue().strip() == (
        f"saved {path}; space {space} now aggregates proxies with the authors' network "
        f"(2 layers, {space.vision_dim} wide, λ={net.lam():.3f})"
    )
    # The tiny profile re-normalises the text mean; the authors did not: the site is told.
    assert "set CLETIR_TEXT_MEAN=plain for the search workers" in err.getvalue()
    proxies = torch.nn.functional.normalize(torch.randn(2, 4, space.vision_dim), dim=-1)
    with torch.no_grad():
        assert (net(proxies) - authors(proxies)[0]).abs().max() <= 1e-6
    assert net.lam() == pytest.approx(float(authors.sigmoid(authors.lamda.detach())), abs=1e-7)
    metadata = read_aggregator_metadata(path)
    assert metadata["text_mean"] == "plain" and metadata["space_fingerprint"] == space.fingerprint
    assert metadata["source_sha256"] == hashlib.sha256((tmp_path / "model.pth").read_bytes()).hexdigest()


def test_load_aggregator_refuses_a_checkpoint_of_another_width(tiny_active_space, media_root, tmp_path):
    space = tiny_active_space
    _authors_checkpoint(tmp_path / "model.pth", 1024)  # the authors' released width: DINOv2-large
    with pytest.raises(CommandError) as refused:
        _run("load_aggregator", str(tmp_path / "model.pth"))
    assert str(refused.value) == (
        f"{tmp_path / 'model.pth'} holds an aggregator for 1024-d vision features, but {space.vision_model}'s "
        f"features are {space.vision_dim}-d: it cannot aggregate them. Use it with a space whose vision encoder "
        "gives 1024-d features (the authors trained on DINOv2-large, 1024-d: the `paper` profile). "
        f"Nothing changed: space {space} keeps its aggregator."
    )
    space.refresh_from_db()
    assert space.aggregator_file.name == "" and space.aggregator_architecture == ""
    assert not (media_root / "aggregators").exists()


def test_a_space_ignores_an_aggregator_file_of_another_architecture(tiny_active_space, media_root, tmp_path):
    from retrieval.search.inputs import space_aggregator

    space = tiny_active_space
    _authors_checkpoint(tmp_path / "model.pth", space.vision_dim)
    _run("load_aggregator", str(tmp_path / "model.pth"))
    space.refresh_from_db()
    assert space_aggregator(space) is not None
    space.aggregator_architecture = "cletir"  # e.g. a file set back in the admin without its architecture
    assert space_aggregator(space) is None  # the mean, not a network the space does not record
