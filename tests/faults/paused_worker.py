"""`python -m tests.faults.paused_worker <celery arguments>`: a real Celery worker whose work
pauses at known points, so a fault test can kill it *in the middle* of a batch or a search.

The product has no test hooks: this wrapper patches two engine methods in the worker's main
process before Celery starts, and the prefork pool processes inherit the patch when they fork.
Each paused call first writes a mark file `<what>-<pid>-<time>` into FAULT_MARK_DIR (so the test
knows which process to kill, and that it is inside the call), then waits FAULT_PAUSE_SECONDS.
Once the test has created the file `release` there (after its kill), a waiting call goes on at
once and later calls neither mark nor wait: the rest runs at full speed.

* `embed`: `Encoders.encode_photos`, which `retrieval.indexing.photos.embed_batch` calls after it has
  claimed its batch (the rows are locked, nothing of the batch is committed yet);
* `generate`: `ProxyGenerator.generate` for the query FAULT_PAUSE_QUERY only (the worker's
  warm-up generates too, and must not pause), which runs while the search is "generating".
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _pause(what: str, seconds: float) -> None:
    folder = Path(os.environ["FAULT_MARK_DIR"])
    if (folder / "release").exists():
        return
    (folder / f"{what}-{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (folder / "release").exists():
        time.sleep(0.02)


def install_pauses() -> None:
    from retrieval.engine.encoders import Encoders
    from retrieval.engine.generator import ProxyGenerator

    seconds = float(os.environ["FAULT_PAUSE_SECONDS"])
    query = os.environ.get("FAULT_PAUSE_QUERY")
    encode_photos, generate = Encoders.encode_photos, ProxyGenerator.generate

    def paused_encode_photos(self, images):
        _pause("embed", seconds)
        return encode_photos(self, images)

    def paused_generate(self, text, seeds):
        if text == query:
            _pause("generate", seconds)
        return generate(self, text, seeds)

    Encoders.encode_photos = paused_encode_photos
    ProxyGenerator.generate = paused_generate


if __name__ == "__main__":
    install_pauses()
    from celery.__main__ import main

    sys.argv[0] = "celery"
    sys.exit(main())
