"""`python -m tests.faults.paused_worker <celery arguments>`: a real Celery worker whose work
pauses at known points, so a fault test can kill it *in the middle* of a batch or a search.

The product has no test hooks: this wrapper patches two engine methods in the worker's main
process before Celery starts, and the prefork pool processes inherit the patch when they fork.
Each paused call first writes a mark file `<what>-<pid>-<time>` into FAULT_MARK_DIR (so the test
knows which process to kill, and that it is inside the call), then waits FAULT_PAUSE_SECONDS.
Once the test has created the file `release` there (after its kill), a waiting call goes on at
once and later calls neither mark nor wait: the rest runs at full speed.

* `embed`: `Encoders.encode_prepared`, the forward passes of a claimed batch in the indexing
  pipeline (`retrieval.indexing.photos`): its claims and those of the batches prefetched behind
  it are committed, none of their vectors is;
* `poison`: not a pause: when FAULT_POISON_FILE is set, reading that photo for indexing (in
  `PhotoBatchPreparer`) marks, then SIGKILLs its own process, as a decoder crash would;
* `generate`: `ProxyGenerator.generate_tensors` (which `generate` calls too) for the query FAULT_PAUSE_QUERY only (the worker's
  warm-up generates too, and must not pause), which runs while the search is "generating".
"""
from __future__ import annotations

import os
import signal
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
    encode_prepared, generate_tensors = Encoders.encode_prepared, ProxyGenerator.generate_tensors

    def paused_encode_prepared(self, prepared):
        _pause("embed", seconds)
        return encode_prepared(self, prepared)

    def paused_generate_tensors(self, text, seeds):
        if text == query:
            _pause("generate", seconds)
        return generate_tensors(self, text, seeds)

    Encoders.encode_prepared = paused_encode_prepared
    ProxyGenerator.generate_tensors = paused_generate_tensors
    poison = os.environ.get("FAULT_POISON_FILE")
    if poison:
        install_poison(poison)


def install_poison(name: str) -> None:
    from retrieval.engine.photo_batches import PhotoBatchPreparer

    folder = Path(os.environ["FAULT_MARK_DIR"])
    pillow_crops = PhotoBatchPreparer._pillow_crops

    def crashing_pillow_crops(self, path, clock):
        if str(path).endswith(name):
            (folder / f"poison-{os.getpid()}-{time.monotonic_ns()}").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return pillow_crops(self, path, clock)

    PhotoBatchPreparer._pillow_crops = crashing_pillow_crops


if __name__ == "__main__":
    install_pauses()
    from celery.__main__ import main

    sys.argv[0] = "celery"
    sys.exit(main())
