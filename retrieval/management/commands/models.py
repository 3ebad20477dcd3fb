"""List the model profiles, their models and where (and whether) their weights are on disk."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from retrieval.engine.model_folders import model_dir
from retrieval.engine.profiles import PROFILES
from retrieval.engine.runtime import get_profile
from retrieval.weights import MANIFEST, hub_cache_sizes, human_size, profile_status, verify_folder


class Command(BaseCommand):
    help = (
        "List every model profile with its model ids and where their weights are: the local model "
        "folder (CLETIR_MODEL_DIR, which wins), the Hugging Face cache, or missing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--profile", default=None, help="list only this profile")
        parser.add_argument(
            "--verify", action="store_true",
            help=f"re-hash local folders against their {MANIFEST} (after copying weights to an offline site)",
        )

    def handle(self, *args, profile=None, verify=False, **options):
        if profile is not None:
            try:
                get_profile(profile)
            except KeyError as exc:
                raise CommandError(str(exc.args[0])) from None
        names = [profile] if profile else list(PROFILES)
        root = model_dir()
        cache = hub_cache_sizes()
        self.stdout.write(f"model folder: {root}")
        problems = []
        for name in names:
            prof = PROFILES[name]
            statuses = profile_status(prof, root, cache)
            ready = all(s.present for s in statuses)
            kind = "random weights, built locally" if prof.random_weights else "real weights"
            self.stdout.write(f"\n{name} ({kind}): {'present' if ready else 'MISSING'}")
            for s in statuses:
                where = s.where if s.path is None else f"{s.where} {s.path}"
                size = f", {human_size(s.size)}" if s.size else ""
                detail = f" ({s.detail})" if s.detail else ""
                self.stdout.write(f"  {s.role:9s} {s.repo_id}: {where}{size}{detail}")
                if verify and s.where == "local folder" and (s.path / MANIFEST).is_file():
                    bad = verify_folder(s.path)
                    problems += [f"{s.repo_id}/{path}: {problem}" for path, problem in bad]
                    self.stdout.write(f"  {'':9s} verified: {'ok' if not bad else f'{len(bad)} file(s) differ'}")
            if not ready:
                how = (f"python -m retrieval.engine.build_models --profile {name}" if prof.random_weights
                       else f"manage.py fetch_models --profile {name}")
                self.stdout.write(f"  get them with: {how}")
        if problems:
            raise CommandError("weights differ from their manifest:\n  " + "\n  ".join(problems))
