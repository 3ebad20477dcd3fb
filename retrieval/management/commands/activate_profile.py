"""Activate a model profile: its embedding space becomes the one photos are indexed into."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.engine.model_folders import MissingWeightsError, model_dir
from retrieval.engine.profiles import Profile
from retrieval.engine.runtime import get_profile
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import serving_space, space_for_profile

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
            self.stdout.write(f"Models: {_describe(get_profile(name))}.")
        except MissingWeightsError as exc:
            if not fallback_tiny or name == FALLBACK:
                raise CommandError(str(exc)) from None
            # One line on stdout says what runs and why; the loaders' reasons (often a long hub
            # error) go to stderr, which `make demo` keeps in its log file.
            self.stderr.write(f"No weights for the {name!r} profile, so the {FALLBACK!r} models are used: {exc}")
            space = self._space(FALLBACK)
            self.stdout.write(
                f"Models: {FALLBACK!r} random-weight demo models (meaningless results), because the {name!r} "
                f"profile's weights are not in {model_dir()}; README \"Models and real weights\" "
                "says how to add them."
            )
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

            # What was built, and where, is detail: stderr, as build_models' own CLI does.
            build_profile(profile, log=lambda message: self.stderr.write(message))
        return space_for_profile(name)


def _describe(profile: Profile) -> str:
    if profile.random_weights:
        return f"{profile.name!r} random-weight models (meaningless results)"
    return f"{profile.name!r} profile ({', '.join(profile.model_ids().values())})"
