"""Evaluate the method on a labelled image folder and write the feature file that ``train`` reads.

    python -m retrieval.engine.evaluate PHOTOS/ --profile default [--k 4] [--seed 0]
        [--aggregator agg.safetensors] [--templates all|single|FILE] [--lam 0.5]
        [--features-out features.npz] [--pr-curves precision-recall.png] [--device cpu]

``PHOTOS/`` holds one sub-folder per category; the sub-folder name is the query text
(underscores become spaces: ``golden_retriever/`` -> "golden retriever"); every image file in it
(jpg, jpeg, png, webp, bmp, gif, tif, tiff; searched recursively) is a photo of that category.

This is the METHOD.md evaluation protocol: every category is one query, the database is every
photo, the positives are the query's own photos. For each category the text vector is encoded
(80 CLIP templates; the single proxy prompt with ``--templates single``; or a site's own list
with ``--templates FILE``, one template a line, ``{}`` for the category), the profile's
generator makes K proxy images (seeds ``seed .. seed+K-1``, so a run is reproducible) and the
vision encoder embeds them. The printed table is the mAP of: text only (λ=0), proxies only
(mean pooling), text + mean proxies fused at ``--lam``, and text + aggregator at its learned λ
when ``--aggregator`` is given. Beside it, the precision-recall curve of each row (averaged
over the categories) is written as a PNG (``--pr-curves``, default ``precision-recall.png`` in
the current folder; the path is printed under the table). With ``--features-out`` all features are saved in the format
of :mod:`retrieval.engine.train`, so a user with real weights can train an aggregator on their own
data and re-run this command with it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .aggregator import ProxyAggregator, load_aggregator
from .pr_plot import save_pr_curves
from .prompts import read_templates
from .seeds import proxy_seeds
from .train import FeatureSet, compare_methods, format_table, precision_recall_curves, save_features

if TYPE_CHECKING:  # the model side is only imported when features are actually extracted
    from .encoders import Encoders
    from .generator import ProxyGenerator

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelledFolder",
    "scan_folder",
    "query_text",
    "proxy_seeds",
    "resolve_templates",
    "extract_features",
    "check_aggregator",
    "main",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class LabelledFolder:
    """A scanned image folder: category folder names, their query texts, photos and labels."""

    root: Path
    categories: list[str]
    queries: list[str]
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 index into categories


def query_text(folder_name: str) -> str:
    """The query for a category folder: underscores to spaces, runs of spaces collapsed."""
    return " ".join(folder_name.replace("_", " ").split())


def scan_folder(root: str | Path) -> LabelledFolder:
    """Find the categories (sub-folders, sorted) and their images (sorted paths).

    Sub-folders without any image are skipped: a query without positives has no AP.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    categories, queries, paths, labels = [], [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            continue
        labels.extend([len(categories)] * len(images))
        categories.append(sub.name)
        queries.append(query_text(sub.name))
        paths.extend(images)
    if len(categories) < 2:
        raise ValueError(f"{root}: need at least 2 category sub-folders with images, found {len(categories)}")
    return LabelledFolder(root, categories, queries, paths, np.asarray(labels, dtype=np.int64))


def resolve_templates(mode: str, proxy_prompt: str) -> list[str] | None:
    """``all`` -> None (the encoder's 80 CLIP templates); ``single`` -> [the profile's prompt];
    anything else is a file of templates, one a line (:func:`~retrieval.engine.prompts.read_templates`).

    The authors ship per-dataset prompt lists (1 to 48 templates) that their inference does not
    use; a file lets a site measure its own against the 80.
    """
    if mode == "all":
        return None
    if mode == "single":
        return [proxy_prompt]
    if not Path(mode).is_file():
        raise ValueError(f"templates must be 'all', 'single' or a file of templates; no file {mode!r}")
    return read_templates(mode)


def _load_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")  # convert() loads the pixels, so the file can be closed


def extract_features(
    folder: LabelledFolder,
    encoders: Encoders,
    generator: ProxyGenerator,
    k: int,
    seed: int,
    templates: Sequence[str] | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
) -> FeatureSet:
    """Encode every photo, generate and embed K proxies per category, encode every query text.

    Photos are read ``batch_size`` at a time so memory does not grow with the folder.
    """
    say = log or (lambda _msg: None)
    n = len(folder.paths)
    vlm_parts, vision_parts = [], []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        images = [_load_rgb(p) for p in folder.paths[start : start + batch_size]]
        vlm_parts.append(encoders.encode_vlm_images(images))
        vision_parts.append(encoders.encode_vision_images(images))
        say(f"photos {min(start + batch_size, n)}/{n}")
    say(f"photos encoded in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    text = encoders.encode_text(folder.queries, None if templates is None else list(templates))
    seeds = proxy_seeds(seed, k)
    proxies = []
    for i, query in enumerate(folder.queries):
        images = generator.generate(query, seeds)
        proxies.append(encoders.encode_vision_images(images))
        say(f"proxies {i + 1}/{len(folder.queries)}: {query!r}")
    say(f"text + proxies in {time.perf_counter() - t0:.1f} s")

    return FeatureSet(
        proxy_features=np.stack(proxies),
        text_features=text,
        category_names=np.asarray(folder.queries),
        db_vlm=np.concatenate(vlm_parts),
        db_vision=np.concatenate(vision_parts),
        db_labels=folder.labels,
        metadata={
            "profile": encoders.profile.name,
            "vision_model": encoders.profile.vision,
            "encoders": encoders.model_versions(),
            "generator": generator.model_versions(),
            "k": k,
            "seeds": seeds,
            "templates": "all (80 CLIP ImageNet)" if templates is None else list(templates),
            "text_mean": encoders.profile.text_mean,
            "root": str(folder.root),
            "category_folders": folder.categories,
            "photos": [str(p.relative_to(folder.root)) for p in folder.paths],
        },
    )


def check_aggregator(net: ProxyAggregator, vision_dim: int, vision_model: str) -> None:
    """Refuse a network trained for other vision features (METHOD.md: never mix spaces)."""
    if net.dim != vision_dim:
        raise ValueError(f"aggregator width {net.dim} != vision feature dim {vision_dim}")
    trained_for = net.config.vision_model
    if trained_for and trained_for != vision_model:
        raise ValueError(
            f"aggregator was trained on {trained_for!r} features, the profile uses {vision_model!r}"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m retrieval.engine.evaluate",
        description="mAP of text / proxies / fused retrieval on a labelled image folder.",
    )
    p.add_argument("folder", type=Path, help="one sub-folder of images per category")
    p.add_argument("--profile", default="default", help="model profile (default, paper, tiny, ...)")
    p.add_argument("--k", type=int, default=None, help="proxies per category (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="first generation seed")
    p.add_argument("--aggregator", type=Path, default=None, help="trained aggregator (.safetensors)")
    p.add_argument(
        "--templates",
        default="all",
        help="all (the 80 CLIP templates), single (the profile's proxy prompt), or a file with "
        "one template a line, {} for the category",
    )
    p.add_argument("--lam", type=float, default=0.5, help="λ for text + mean proxies (default 0.5)")
    p.add_argument("--features-out", type=Path, default=None, help="write the train feature file here")
    p.add_argument("--pr-curves", type=Path, default=Path("precision-recall.png"),
                   help="write the precision-recall curves here (PNG; default: precision-recall.png)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the profile's choice)")
    p.add_argument("--batch-size", type=int, default=64, help="photos read per batch")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Model side imported here, not at module level: the table/feature helpers above stay
    # importable (and testable) without torchvision/open_clip/diffusers being loaded.
    from .encoders import load_encoders
    from .generator import load_generator
    from .runtime import get_profile

    profile = get_profile(args.profile)
    try:
        templates = resolve_templates(args.templates, profile.proxy_prompt)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2 and the usage, before any model loads
    k = args.k or profile.k
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    net = load_aggregator(args.aggregator) if args.aggregator else None
    folder = scan_folder(args.folder)
    encoders = load_encoders(profile, args.device)
    if net is not None:
        check_aggregator(net, encoders.vision_dim, profile.vision)
    generator = load_generator(profile, args.device)
    features = extract_features(
        folder, encoders, generator, k, args.seed, templates, args.batch_size, log
    )
    if args.features_out:
        save_features(args.features_out, features)
        if log:
            log(f"features written to {args.features_out}")
    print(
        f"profile {profile.name}: {len(folder.categories)} categories, {len(folder.paths)} photos, "
        f"K={k}, seed {args.seed}, templates {args.templates}, text mean {profile.text_mean}\n"
    )
    rows = compare_methods(features, None, net, args.lam)
    print(format_table(rows))
    path = save_pr_curves(args.pr_curves, precision_recall_curves(features, None, net, args.lam),
                          f"{profile.name}: {len(folder.categories)} categories, {len(folder.paths)} photos",
                          maps=dict(rows))
    print(f"\nprecision-recall curves: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
