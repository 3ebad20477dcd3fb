"""Use the authors' trained aggregator (their `model.pth`) for the active embedding space."""
from __future__ import annotations

import hashlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval.engine.authors_checkpoint import TEXT_MEAN, AuthorsCheckpointError, paper_aggregator_from_authors
from retrieval.engine.runtime import get_profile
from retrieval.indexing.services import use_aggregator
from retrieval.indexing.spaces import active_space


class Command(BaseCommand):
    help = (
        "Use the authors' trained aggregator (model.pth of github faixan-khan/cletir) for the active "
        "embedding space: check it against the space's vision width, save it in cletir's format under "
        "MEDIA_ROOT/aggregators/ as a `paper` network, and set it on the space."
    )

    def add_arguments(self, parser):
        parser.add_argument("checkpoint", type=Path, help="the authors' model.pth (a PyTorch state dict)")

    def handle(self, *args, checkpoint: Path, **options):

        space = active_space()
        if space is None:
            raise CommandError("no active embedding space: activate a profile first (manage.py activate_profile)")
        try:
            net = paper_aggregator_from_authors(checkpoint, space.vision_dim, space.vision_model)
        except AuthorsCheckpointError as exc:
            raise CommandError(f"{str(exc).rstrip('.')}. Nothing changed: space {space} keeps its aggregator.") from None
        path = use_aggregator(space, net, {
            "source": "authors' checkpoint (github faixan-khan/cletir)",
            "source_file": str(checkpoint.resolve()),
            "source_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            "text_mean": TEXT_MEAN,
        }, origin="authors-")
        self.stdout.write(self.style.SUCCESS(
            f"saved {path}; space {space} now aggregates proxies with the authors' network "
            f"({net.config.layers} layers, {net.dim} wide, λ={net.lam():.3f})"
        ))
        profile = get_profile(space.profile)
        if profile.text_mean != TEXT_MEAN:
            # A warning, not a refusal: the ranking is the same as with a λ shifted towards the
            # proxies, so the network works, just not exactly as the authors ran it.
            self.stderr.write(self.style.WARNING(
                f"The authors trained this network with the plain mean of the template embeddings as "
                f"the text vector; the {profile.name!r} profile re-normalises it. To run their inference "
                f"exactly, set CLETIR_TEXT_MEAN={TEXT_MEAN} for the search workers (the `paper` profile "
                "does this already)."
            ))
