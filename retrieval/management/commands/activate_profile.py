"""Activate a model profile: its embedding space becomes the one photos are indexed into.

With --wait, the command follows the re-index (a progress bar on a terminal) until the space
holds every photo and search uses it, then exits 0; it exits 1 with the reason when indexing
makes no progress for --stall-seconds (no embed worker running, a worker failing every batch)
or when another profile is activated meanwhile. It only watches: the workers do the indexing.
"""
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from assets.progress_bar import add_progress_argument, progress_bar
from retrieval.engine.model_folders import MissingWeightsError, model_dir
from retrieval.engine.profiles import Profile
from retrieval.engine.runtime import get_profile
from retrieval.indexing.progress import index_progress
from retrieval.indexing.services import activate_space
from retrieval.indexing.spaces import serving_space, space_for_profile
from retrieval.models import EmbeddingSpace

FALLBACK = "tiny"
POLL_SECONDS = 1.0


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
        parser.add_argument(
            "--wait", action="store_true",
            help="follow the re-index until search uses the new space; exit 1 if it stalls or is replaced",
        )
        parser.add_argument(
            "--stall-seconds", type=float, default=None,
            help="with --wait: give up when no photo was indexed for this long (default: twice "
                 "CLETIR_PHOTO_WORK_STALE_SECONDS, so the stale-work sweep gets its chance to queue it again)",
        )
        add_progress_argument(parser)

    def handle(self, *args, profile=None, fallback_tiny=False, wait=False, stall_seconds=None, no_progress=False,
               **options):
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
        if wait:
            stall = stall_seconds if stall_seconds is not None else 2 * settings.CLETIR_PHOTO_WORK_STALE_SECONDS
            self._wait_until_serving(space, stall, show_progress=not no_progress)

    def _wait_until_serving(self, space: EmbeddingSpace, stall_seconds: float, show_progress: bool) -> None:
        """Poll the space's index counts until it is complete and serving."""
        progress = index_progress(space)
        bar = progress_bar(self.stderr, progress.total, "photos", wanted=show_progress, desc=f"Indexing into {space}")
        last_done, last_change = -1, time.monotonic()
        with bar:
            while True:
                space.refresh_from_db(fields=["is_active", "is_serving", "completed_at"])
                progress = index_progress(space)
                done = progress.indexed + progress.failed
                bar.total = progress.total  # photos uploaded meanwhile join the re-index
                bar.n = done
                bar.refresh()  # once per poll: the counts change no more often than that
                if space.is_serving and space.completed_at is not None:
                    break
                if not space.is_active:
                    raise CommandError(f"{space} is no longer the active space: another profile was activated "
                                       "meanwhile, and its re-index replaces this one.")
                now = time.monotonic()
                if done != last_done:
                    last_done, last_change = done, now
                elif now - last_change >= stall_seconds:
                    raise CommandError(
                        f"indexing into {space} made no progress for {stall_seconds:.0f} s ({done} of "
                        f"{progress.total} photos done): is an `embed` worker running? (manage.py check_services; "
                        "its log says why batches fail). The space stays active; run this again to keep waiting.")
                time.sleep(POLL_SECONDS)
        self.stdout.write(f"search uses {space}: {progress.indexed} photos indexed")
        if progress.failed:
            self.stderr.write(f"{progress.failed} photos could not be indexed and are not searchable; the admin's "
                              "photo list (index status: failed) says why.")

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
