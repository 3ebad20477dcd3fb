"""Real model weights on disk: which files a model needs, fetching them, checking them.

Operations tooling for ``manage.py fetch_models`` and ``manage.py models``, kept out of the ML
engine (which only reads the folders). A model's folder ``<model_dir()>/<hub id>``
(``retrieval.engine.model_folders``) is what the engine's loaders (``encoders`` /
``generator``) read before they would try the hub, so a site that fills it (here, or by copying
the folder from a machine with internet) never contacts the hub. Fetching:

* lists the hub repo's files with their checksums (LFS files: sha256; small git files: the git
  blob id, a sha1 of ``"blob <size>\\0" + bytes``) and keeps only what the loaders read (one
  weight format, no fp16/flax/onnx/single-file duplicates: a few GB instead of tens);
* writes a manifest (``.cletir-manifest.json``) next to the files first, with the expected
  checksums, so an interrupted fetch is visible as incomplete and a copied folder can be
  verified later (``manage.py models --verify``);
* skips files already present with the right checksum, so a second run resumes: only missing
  or damaged files are fetched (partial files are continued where the source allows);
* verifies every fetched file and removes one that does not match, reporting it.

Sources: :class:`HubSource` (the Hugging Face hub through ``huggingface_hub``; the real path)
and :class:`MirrorSource` (a folder laid out ``<root>/<hub id>/...``, e.g. another site's
model folder on a disk; the tests' stand-in for the hub). No Django here.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from retrieval.engine.profiles import Profile

MANIFEST = ".cletir-manifest.json"
CHUNK = 1 << 20

# Weight files the loaders read, in order of preference, per role; one is taken per folder.
# open_clip reads its own file names; transformers and diffusers prefer safetensors.
_WEIGHT_NAMES: dict[str, tuple[str, ...]] = {
    "vlm": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "vision": ("model.safetensors", "pytorch_model.bin"),
    "generator": ("diffusion_pytorch_model.safetensors", "model.safetensors",
                  "diffusion_pytorch_model.bin", "pytorch_model.bin"),
    "decoder": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
}
# Configs, tokenizers, preprocessing: small, and the loaders need them.
_CONFIG_SUFFIXES = (".json", ".txt")
# What makes a folder loadable for a role (the loaders check the same files).
MARKERS: dict[str, tuple[str, ...]] = {
    "vlm": ("open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "vision": ("config.json",),
    "generator": ("model_index.json",),
    "decoder": ("config.json",),
}


@dataclass(frozen=True)
class RemoteFile:
    """A file of a model repo and what it must hash to (at least one checksum is known)."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    def as_manifest_entry(self) -> dict:
        entry: dict = {"size": self.size}
        if self.sha256:
            entry["sha256"] = self.sha256
        if self.git_sha1:
            entry["git_sha1"] = self.git_sha1
        return entry


class WeightSource(Protocol):
    """Where weights come from."""

    description: str

    def list_files(self, repo_id: str) -> tuple[str, list[RemoteFile]]:
        """(revision, every file of the repo with its checksums)."""

    def fetch(self, repo_id: str, revision: str, file: RemoteFile, folder: Path,
              progress: Callable[[int], None]) -> None:
        """Write ``folder/file.path``, continuing a partial download where possible;
        ``progress(n)`` is called with each chunk's byte count."""


class ChecksumError(RuntimeError):
    """A file's bytes do not match the checksum its source published."""


# ---------------------------------------------------------------------------- file selection


def select_files(role: str, files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """The files a role's loader reads: configs everywhere, one weight format per folder.

    A diffusers repo keeps one model per sub-folder (unet/, vae/, ...) and sometimes a
    single-file checkpoint at its root, which the pipeline loader never reads: at the root of a
    generator repo only configs are taken.
    """
    preferred = _WEIGHT_NAMES[role]
    by_dir: dict[str, dict[str, RemoteFile]] = {}
    for f in files:
        by_dir.setdefault(posixpath.dirname(f.path), {})[posixpath.basename(f.path)] = f
    chosen: list[RemoteFile] = []
    for directory, names in by_dir.items():
        weights, index = ([], None) if role == "generator" and directory == "" else _weights_of(names, preferred)
        chosen.extend(weights)
        for name, f in names.items():
            if name.startswith(".") or not name.endswith(_CONFIG_SUFFIXES):
                continue
            # The shard index of a weight format not taken would send the loader after
            # shards that are not there.
            if name.endswith(".index.json") and name != index:
                continue
            chosen.append(f)
    return sorted(chosen, key=lambda f: f.path)


def _weights_of(names: dict[str, RemoteFile], preferred: tuple[str, ...]) -> tuple[list[RemoteFile], str | None]:
    """The first preferred weight file present, whole or sharded: (files, shard index name)."""
    for name in preferred:
        if name in names:
            return [names[name]], None
        index = f"{name}.index.json"
        if index in names:
            stem, ext = name.rsplit(".", 1)
            shard = re.compile(rf"{re.escape(stem)}-\d+-of-\d+\.{re.escape(ext)}")
            shards = sorted((f for n, f in names.items() if shard.fullmatch(n)), key=lambda f: f.path)
            if shards:
                return shards, index
    return [], None


# ---------------------------------------------------------------------------- checksums


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content (what the hub reports for non-LFS files)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's id, not security
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checksum_problem(path: Path, expected: RemoteFile | dict) -> str | None:
    """None when ``path`` matches every checksum known for it, else what differs."""
    entry = expected.as_manifest_entry() if isinstance(expected, RemoteFile) else expected
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"size {size} bytes, expected {entry['size']}"
    if entry.get("sha256"):
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            return f"sha256 {actual}, expected {entry['sha256']}"
    if entry.get("git_sha1"):
        actual = git_blob_sha1(path)
        if actual != entry["git_sha1"]:
            return f"git sha1 {actual}, expected {entry['git_sha1']}"
    return None


# ---------------------------------------------------------------------------- manifest


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / MANIFEST)  # atomic: a reader never sees half a manifest


# ---------------------------------------------------------------------------- sources


class HubSource:
    """The Hugging Face hub, through huggingface_hub (resumes its own partial downloads)."""

    description = "the Hugging Face hub"

    def __init__(self, api=None, download: Callable | None = None) -> None:
        # Injectable so the listing can be tested without the network.
        from huggingface_hub import HfApi, hf_hub_download

        self.api = api or HfApi()
        self.download = download or hf_hub_download

    def list_files(self, repo_id: str) -> tuple[str, list[RemoteFile]]:
        info = self.api.model_info(repo_id, files_metadata=True)
        files = []
        for s in info.siblings or []:
            lfs = s.lfs
            files.append(RemoteFile(
                path=s.rfilename,
                size=int(lfs.size if lfs else s.size or 0),
                sha256=lfs.sha256 if lfs else None,
                # For an LFS file the blob id is the pointer's, not the content's.
                git_sha1=None if lfs else s.blob_id,
            ))
        return info.sha, files

    def fetch(self, repo_id: str, revision: str, file: RemoteFile, folder: Path,
              progress: Callable[[int], None]) -> None:
        # hf_hub_download keeps partial data under folder/.cache/huggingface and resumes it; it
        # draws its own progress bar, so `progress` is reported once, at the end.
        self.download(repo_id, file.path, revision=revision, local_dir=str(folder))
        progress(file.size)


class MirrorSource:
    """A folder holding model folders as ``<root>/<hub id>/...`` (a copy of a model folder).

    Expected checksums come from the mirror's own manifest when it has one (written by a fetch
    from the hub), so a damaged copy is caught; otherwise from the mirror's files as they are.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"the mirror {self.root}"

    def list_files(self, repo_id: str) -> tuple[str, list[RemoteFile]]:
        folder = self.root / repo_id
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        manifest = read_manifest(folder)
        if manifest:
            return manifest.get("revision", "mirror"), [
                RemoteFile(path, e["size"], e.get("sha256"), e.get("git_sha1"))
                for path, e in sorted(manifest["files"].items())
            ]
        files = []
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                files.append(RemoteFile(rel.as_posix(), p.stat().st_size, sha256=file_sha256(p)))
        return "mirror", files

    def fetch(self, repo_id: str, revision: str, file: RemoteFile, folder: Path,
              progress: Callable[[int], None]) -> None:
        src = self.root / repo_id / file.path
        dest = folder / file.path
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        if offset > file.size:
            part.unlink()  # longer than the file: not a prefix of it
            offset = 0
        if offset:
            progress(offset)
        with open(src, "rb") as reader, open(part, "ab") as writer:
            reader.seek(offset)
            while chunk := reader.read(CHUNK):
                writer.write(chunk)
                progress(len(chunk))
        part.replace(dest)


# ---------------------------------------------------------------------------- fetching


@dataclass
class FileOutcome:
    path: str
    size: int
    state: str  # "present" (already there, verified), "fetched", "mismatch"
    resumed_from: int = 0
    problem: str | None = None


@dataclass
class ModelFetch:
    role: str
    repo_id: str
    folder: Path
    revision: str
    files: list[FileOutcome]

    @property
    def mismatches(self) -> list[FileOutcome]:
        return [f for f in self.files if f.state == "mismatch"]


def fetch_model(
    source: WeightSource,
    role: str,
    repo_id: str,
    folder: Path,
    progress_factory: Callable[[str, int, int], Callable[[int], None]] | None = None,
    log: Callable[[str], None] | None = None,
) -> ModelFetch:
    """Bring ``folder`` to the source's files for ``role``; return what happened per file.

    ``progress_factory(label, total, initial)`` returns the per-chunk callback of one file's
    progress bar (None: no bar). A mismatching file is deleted (a later run fetches it again)
    and reported in the result; the manifest keeps ``complete: false`` until all files match.
    """
    say = log or (lambda _m: None)
    revision, listing = source.list_files(repo_id)
    files = select_files(role, listing)
    if not files:
        raise FileNotFoundError(f"{source.description} has no loadable {role} files for {repo_id}")
    manifest = {
        "repo_id": repo_id,
        "role": role,
        "revision": revision,
        "source": source.description,
        "complete": False,
        "files": {f.path: f.as_manifest_entry() for f in files},
    }
    write_manifest(folder, manifest)
    outcomes = []
    for i, f in enumerate(files, 1):
        dest = folder / f.path
        if dest.is_file() and checksum_problem(dest, f) is None:
            outcomes.append(FileOutcome(f.path, f.size, "present"))
            continue
        if dest.exists():
            dest.unlink()  # damaged or from another revision: fetched whole again
        part = dest.with_name(dest.name + ".part")
        initial = part.stat().st_size if part.exists() and part.stat().st_size <= f.size else 0
        say(f"[{i}/{len(files)}] {repo_id}/{f.path} ({human_size(f.size)})"
            + (f", resuming at {human_size(initial)}" if initial else ""))
        bar = progress_factory(f.path, f.size, initial) if progress_factory else (lambda _n: None)
        # The bar starts at `initial`; a resuming source reports that prefix again: skip it.
        source.fetch(repo_id, revision, f, folder, _skip_first(bar, initial))
        problem = checksum_problem(dest, f)
        if problem:
            dest.unlink(missing_ok=True)
            outcomes.append(FileOutcome(f.path, f.size, "mismatch", initial, problem))
        else:
            outcomes.append(FileOutcome(f.path, f.size, "fetched", initial))
    if not any(o.state == "mismatch" for o in outcomes):
        # Record sha256 of every file (the hub gives only a git sha1 for small ones), so a
        # copy of this folder can be verified with one algorithm, and mark it complete.
        for f in files:
            manifest["files"][f.path]["sha256"] = manifest["files"][f.path].get("sha256") or file_sha256(folder / f.path)
        manifest["complete"] = True
        manifest["fetched_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_manifest(folder, manifest)
    return ModelFetch(role, repo_id, folder, revision, outcomes)


def _skip_first(callback: Callable[[int], None], skip: int) -> Callable[[int], None]:
    remaining = [skip]

    def wrapped(n: int) -> None:
        take = min(remaining[0], n)
        remaining[0] -= take
        if n - take:
            callback(n - take)

    return wrapped


# ---------------------------------------------------------------------------- status


@dataclass
class WeightStatus:
    role: str
    repo_id: str
    where: str  # "local folder", "HF cache", "missing"
    path: Path | None
    size: int
    present: bool
    detail: str = ""


def folder_size(folder: Path) -> int:
    """Bytes of a model folder's files, leaving out bookkeeping (dot files: the manifest, the
    build stamp, huggingface_hub's .cache of partial downloads)."""
    total = 0
    for p in folder.rglob("*"):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            total += p.stat().st_size
    return total


def local_status(role: str, repo_id: str, folder: Path) -> WeightStatus | None:
    """The status of a local model folder, or None when there is none."""
    if not folder.is_dir():
        return None
    manifest = read_manifest(folder)
    size = folder_size(folder)
    if manifest is not None:
        missing = [p for p, e in manifest["files"].items()
                   if not (folder / p).is_file() or (folder / p).stat().st_size != e["size"]]
        if missing or not manifest.get("complete"):
            have = len(manifest["files"]) - len(missing)
            return WeightStatus(role, repo_id, "local folder", folder, size, False,
                                f"incomplete: {have} of {len(manifest['files'])} files")
        return WeightStatus(role, repo_id, "local folder", folder, size, True)
    if any((folder / marker).is_file() for marker in MARKERS[role]):
        # Built by build_models (random weights, stamped) or copied in by hand (no checksums).
        built = (folder / ".cletir-built.json").is_file()
        return WeightStatus(role, repo_id, "local folder", folder, size, True, "" if built else "no manifest")
    return WeightStatus(role, repo_id, "local folder", folder, size, False, "no loadable files")


def hub_cache_sizes() -> dict[str, tuple[Path, int]]:
    """Models in the huggingface_hub cache: repo id -> (folder, bytes on disk)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return {}
    return {r.repo_id: (Path(r.repo_path), r.size_on_disk) for r in info.repos if r.repo_type == "model"}


def profile_status(profile: Profile, root: Path, cache: dict[str, tuple[Path, int]]) -> list[WeightStatus]:
    """Where each model of a profile is: its local folder (which wins), the HF cache, or nowhere."""
    out = []
    for role, repo_id in profile.model_ids().items():
        status = local_status(role, repo_id, root / repo_id)
        if (status is None or not status.present) and not profile.random_weights and repo_id in cache:
            path, size = cache[repo_id]
            status = WeightStatus(role, repo_id, "HF cache", path, size, True)
        out.append(status or WeightStatus(role, repo_id, "missing", None, 0, False))
    return out


def verify_folder(folder: Path) -> list[tuple[str, str]]:
    """(file, problem) for each file of a folder's manifest that does not match it."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST}")
    problems = []
    for path, entry in sorted(manifest["files"].items()):
        problem = checksum_problem(folder / path, entry)
        if problem:
            problems.append((path, problem))
    return problems


def human_size(n: int) -> str:
    """Decimal units, as disks are sold: 1 GB = 10^9 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
