"""Download a profile's real weights into CLETIR_MODEL_DIR, checked against their checksums."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.engine.model_folders import hub_offline, model_dir
from retrieval.engine.profiles import PROFILES
from retrieval.engine.runtime import get_profile
from retrieval.weights import HubSource, MirrorSource, WeightSource, fetch_model, human_size


class Command(BaseCommand):
    help = (
        "Download every model of a profile into CLETIR_MODEL_DIR/<hub id> (from the Hugging Face "
        "hub, or from a mirror folder with --source), verifying each file's checksum. A second "
        "run fetches only what is missing or damaged."
    )

    def add_arguments(self, parser):
        real = sorted(name for name, p in PROFILES.items() if not p.random_weights)
        parser.add_argument("--profile", default=None, help=f"profile to fetch ({', '.join(real)}; default: CLETIR_PROFILE)")
        parser.add_argument(
            "--source", type=Path, default=None,
            help="a folder holding model folders as <DIR>/<hub id> (another site's CLETIR_MODEL_DIR) instead of the hub",
        )

    def handle(self, *args, profile=None, source=None, **options):
        name = profile or settings.CLETIR_PROFILE
        try:
            prof = get_profile(name)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        if prof.random_weights:
            raise CommandError(
                f"profile {name!r} uses random weights that cletir builds itself; there is nothing to "
                f"download. Build them with `python -m retrieval.engine.build_models --profile {name}`."
            )
        origin = self._source(source)
        root = model_dir()
        self.stdout.write(f"profile {name}: fetching from {origin.description} into {root}")
        failures = []
        for role, repo_id in prof.model_ids().items():
            try:
                result = fetch_model(origin, role, repo_id, root / repo_id, self._progress_bar,
                                     log=lambda line: self.stdout.write(line))
            except FileNotFoundError as exc:
                raise CommandError(f"{role} {repo_id}: {exc}") from None
            fetched = [f for f in result.files if f.state == "fetched"]
            present = [f for f in result.files if f.state == "present"]
            resumed = [f for f in fetched if f.resumed_from]
            total = sum(f.size for f in result.files)
            self.stdout.write(
                f"{role} {repo_id}@{result.revision[:12]}: {len(result.files)} files, {human_size(total)}; "
                f"fetched {len(fetched)} (resumed {len(resumed)}), already present {len(present)}, "
                f"checksum mismatches {len(result.mismatches)}"
            )
            for bad in result.mismatches:
                failures.append(f"{repo_id}/{bad.path}: {bad.problem}")
        if failures:
            raise CommandError(
                f"checksum mismatch in {len(failures)} file(s); they were removed, run fetch_models again "
                f"(with --source, replace the mirror's copy first):\n  " + "\n  ".join(failures)
            )
        self.stdout.write(self.style.SUCCESS(
            f"profile {name}: all weights present and verified; activate it with `manage.py activate_profile {name}`"
        ))

    def _source(self, mirror: Path | None) -> WeightSource:
        if mirror is not None:
            if not mirror.is_dir():
                raise CommandError(f"--source {mirror} is not a folder")
            return MirrorSource(mirror)
        if hub_offline():
            raise CommandError(
                "HF_HUB_OFFLINE is set, so the hub must not be contacted. Run with HF_HUB_OFFLINE=0 on a "
                "machine with internet access, or copy a model folder over and use --source DIR."
            )
        return HubSource()

    def _progress_bar(self, label: str, total: int, initial: int):
        from tqdm.auto import tqdm

        # disable=None: a bar on a terminal, nothing in logs and pipes.
        bar = tqdm(total=total, initial=initial, desc=label, unit="B", unit_scale=True,
                   unit_divisor=1000, file=self.stderr, disable=None, leave=False)

        def update(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return update
