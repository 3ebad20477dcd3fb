"""Activate a model profile: its embedding space becomes the one photos are indexed into."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.engine.model_folders import MissingWeightsError
from retrieval.engine.runtime import get_profile
from retrieval.spaces import activate_space, serving_space, space_for_profile

FALLBACK = "tiny"


class Command(BaseCommand):
    help = (
        "Activate a model profile (default: CLETIR_PROFILE). Every library is re-indexed into its "
        "space in the background; search keeps using the previous complete space until then."
    )

    def add_arguments(self, parser):
        parser.add_argument("profile", nargs="?", default=None)
        parser.add_argument(
            "--fallback-tiny", action="store_true",
            help="if the profile's weights are missing, use the tiny random-weight demo models instead",
        )

    def handle(self, *args, profile=None, fallback_tiny=False, **options):
        name = profile or settings.CLETIR_PROFILE
        try:
            space = self._space(name)
        except MissingWeightsError as exc:
            if not fallback_tiny or name == FALLBACK:
                raise CommandError(str(exc)) from None
            self.stderr.write(self.style.WARNING(
                f"No weights for the {name!r} profile ({exc}).\n"
                f"Using the {FALLBACK!r} profile: small RANDOM-WEIGHT models, so the demo runs "
                "offline; its search results are meaningless."
            ))
            space = self._space(FALLBACK)
        activate_space(space)
        serving = serving_space()
        self.stdout.write(f"active space: {space} (dims {space.vlm_dim} + {space.vision_dim})")
        if serving and serving.pk != space.pk:
            self.stdout.write(f"search keeps using {serving} until {space} holds every photo")

    def _space(self, name: str):
        try:
            profile = get_profile(name)
        except KeyError as exc:
            raise CommandError(str(exc)) from None
        if profile.random_weights:
            from retrieval.engine.build_models import build_profile

            build_profile(profile, log=lambda message: self.stdout.write(message))
        return space_for_profile(name)
