"""The single-machine broker (kombu's filesystem transport) in a folder, and pointing this
process's Celery app at a broker, for the settings, the tests and the benchmarks alike."""
from __future__ import annotations

from pathlib import Path

FILESYSTEM_URL = "filesystem://localhost//"  # "localhost" only names the machine: kombu warns without a host


def filesystem_options(folder: Path, poll_seconds: float) -> dict:
    """Transport options of a filesystem broker in `folder` (its queue, control and result
    folders are made here); `poll_seconds` is how often a worker looks for work."""
    for sub in ("queue", "control", "results"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"), "store_processed": False, "polling_interval": poll_seconds}


def filesystem_results(folder: Path) -> str:
    """The result backend beside a filesystem broker: small task return values as files."""
    return (folder / "results").as_uri()


def point_app_at(app, broker_url: str, result_backend: str | None, transport_options: dict) -> None:
    """Send this process's tasks to another broker from now on (the app's cached connections to
    the old one are dropped)."""
    app.conf.update(broker_url=broker_url, result_backend=result_backend, broker_transport_options=transport_options)
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
