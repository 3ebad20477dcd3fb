"""Train the proxy aggregator for the active embedding space on a site's labelled photos."""
from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from retrieval.engine.encoders import load_encoders
from retrieval.engine.evaluate import extract_features, resolve_templates, scan_folder
from retrieval.engine.generator import load_generator
from retrieval.engine.pr_plot import save_pr_curves
from retrieval.engine.runtime import get_profile
from retrieval.engine.train import (
    TrainConfig,
    add_architecture_arguments,
    compare_methods,
    format_table,
    precision_recall_curves,
    save_features,
    text_mean_metadata,
    train_aggregator,
)
from retrieval.indexing.services import use_aggregator
from retrieval.indexing.spaces import active_space, encoder_identity


class Command(BaseCommand):
    help = (
        "Extract features of a labelled folder (one sub-folder of photos per category) with the "
        "active space's models, train the aggregation network and λ, print the mAP before and after "
        "on held-out categories, and use the result for the active space if it beats mean pooling."
    )

    def add_arguments(self, parser):
        d = TrainConfig()
        parser.add_argument("folder", type=Path, help="one sub-folder of photos per category (its name is the query)")
        parser.add_argument("--k", type=int, default=None, help="proxies per category (default: the profile's)")
        parser.add_argument("--seed", type=int, default=0, help="first generation seed and training seed")
        parser.add_argument("--epochs", type=int, default=d.epochs)
        parser.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (epochs)")
        parser.add_argument("--lr", type=float, default=d.lr)
        parser.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of categories held out")
        parser.add_argument("--batch-size", type=int, default=d.batch_size, help="photos per training step")
        parser.add_argument("--layers", type=int, default=d.layers)
        parser.add_argument("--loss", choices=("both", "photo", "query"), default=d.loss)
        parser.add_argument("--proxy-dropout", type=float, default=d.proxy_dropout)
        add_architecture_arguments(parser)
        parser.add_argument("--templates", default="all",
                            help="all (80 CLIP templates), single (the proxy prompt) or a file, one template a line")
        parser.add_argument("--lam", type=float, default=0.5, help="λ of the mean-pooling rows of the table")
        parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the profile's choice)")
        parser.add_argument("--features-out", type=Path, default=None, help="also save the features (.npz)")
        parser.add_argument("--pr-curves", type=Path, default=None,
                            help="write the precision-recall curves of the tables here (PNG; default: "
                                 "var/reports/train_aggregator-space<ID>-<time>.png)")
        parser.add_argument("--force", action="store_true", help="save and use the network even if it does not beat mean pooling")

    def handle(self, *args, folder: Path, **o):
        if o["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        space = active_space()
        if space is None:
            raise CommandError("no active embedding space: activate a profile first (manage.py activate_profile)")
        try:
            labelled = scan_folder(folder)
            templates = resolve_templates(o["templates"], get_profile(space.profile).proxy_prompt)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        encoders = load_encoders(space.profile, o["device"])
        # An aggregator is only valid for the features it was trained on (METHOD.md).
        if encoder_identity(encoders)[1] != space.fingerprint:
            raise CommandError(
                f"the {space.profile!r} weights on disk are not the ones that made {space}; "
                "activate the profile again before training"
            )
        generator = load_generator(space.profile, o["device"])
        profile = encoders.profile
        k = o["k"] or profile.k
        say = (lambda line: self.stderr.write(line)) if o["verbosity"] >= 1 else None
        self.stdout.write(
            f"space {space} (profile {profile.name}): {len(labelled.categories)} categories, "
            f"{len(labelled.paths)} photos, K={k}, seed {o['seed']}"
        )
        features = extract_features(labelled, encoders, generator, k, o["seed"], templates, log=say)
        if o["features_out"]:
            save_features(o["features_out"], features)
        config = TrainConfig(
            val_fraction=o["val_fraction"], epochs=o["epochs"], lr=o["lr"], batch_size=o["batch_size"],
            patience=o["patience"], layers=o["layers"], loss=o["loss"], proxy_dropout=o["proxy_dropout"],
            seed=o["seed"], vision_model=space.vision_model, architecture=o["architecture"],
            attention_dropout=o["attention_dropout"],
        )
        try:
            result = train_aggregator(features, config, log=say)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        val = result.val_categories
        held_out = ", ".join(features.category_names[val].tolist())
        self.stdout.write(f"\nheld-out categories ({len(val)}): {held_out}; database: all {len(labelled.paths)} photos")
        rows = compare_methods(features, val, result.net, o["lam"])  # mean pooling's 3 rows, then the network's 2
        self.stdout.write("\nBefore (mean pooling):\n" + format_table(rows[:3]))
        self.stdout.write(f"\nAfter (trained {result.net.config.architecture} aggregator, best epoch "
                          f"{result.best_epoch}):\n" + format_table(rows[3:]))
        curves = o["pr_curves"] or (settings.VAR_DIR / "reports" /
                                    f"train_aggregator-space{space.pk}-{timezone.now():%Y%m%d-%H%M%S}.png")
        curves = save_pr_curves(curves, precision_recall_curves(features, val, result.net, o["lam"]),
                                f"{space}: {len(val)} held-out categories, {len(labelled.paths)} photos", maps=dict(rows))
        self.stdout.write(f"\nprecision-recall curves: {curves.resolve()}")

        if not result.improved and not o["force"]:
            raise CommandError(
                f"the trained aggregator (val mAP {result.best_val_map:.4f}) does not beat mean pooling with "
                f"λ=0.5 ({result.baseline_val_map:.4f}) on the held-out categories; nothing saved, search keeps "
                "the mean. Use --force to save it anyway."
            )
        path = self._save(space, result, features, labelled.root, o["seed"])
        self.stdout.write(self.style.SUCCESS(
            f"\nsaved {path}; space {space} now aggregates proxies with it (λ={result.net.lam():.3f})"
        ))

    def _save(self, space, result, features, root: Path, seed: int) -> Path:
        return use_aggregator(space, result.net, {
            "best_epoch": str(result.best_epoch),
            "val_map": f"{result.best_val_map:.6f}",
            "baseline_val_map": f"{result.baseline_val_map:.6f}",
            "train_categories": json.dumps(features.category_names[result.train_categories].tolist()),
            "val_categories": json.dumps(features.category_names[result.val_categories].tolist()),
            "folder": str(root),
            "seed": str(seed),
            **text_mean_metadata(features),
        })
