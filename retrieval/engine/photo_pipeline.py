"""Batches of photos through the two image encoders, with reading, decoding and storing
overlapped with the forward passes.

    take batch n+2 | read + decode + resize n+1 | forward passes n | store n-1

`embed_batches` asks its caller for batches (`take`: the indexing task claims them from the
database; a benchmark lists files), hands each to a prefetch thread that prepares it
(photo_batches: decoding threads, and on a GPU nvJPEG and torch on a CUDA stream of their own),
runs the forward passes on the calling thread and gives the features to the caller's `store`.
On a GPU the forward passes are queued and the previous batch is stored while they run; on a
CPU they are synchronous and each batch is stored right after its passes, while the next ones
are being decoded. `take` and `store` run on the calling thread only (a caller's database
connection and transaction stay on it).

At most `prefetch` batches are taken and being prepared ahead of the one in the encoders:
memory is bounded by (prefetch + 1) batches of pixels (photo_batches states the bytes per
photo) and one batch of features waiting for its store.
"""
from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch

from retrieval.engine.encoders import features_to_numpy
from retrieval.engine.photo_batches import PhotoBatchPreparer, PreparedPhotos

T = TypeVar("T")
Features = tuple[np.ndarray, np.ndarray]


@dataclass
class PipelineClock:
    """Seconds per stage: the calling thread's (take, prepare_wait, forward, store), the preparing
    threads' (read, decode, preprocess: summed over threads), and, on a GPU, the time the encoders
    kept it busy (forward_busy, from CUDA events)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _events: list = field(default_factory=list)

    def timed(self, stage: str, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def add(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self.seconds[stage] += seconds

    def gpu_busy_seconds(self) -> float:
        """Seconds the GPU spent in forward passes (waits for them); 0 on a CPU."""
        busy = sum(start.elapsed_time(end) for start, end in self._events) / 1000
        self._events.clear()
        self.seconds["forward_busy"] += busy
        return self.seconds["forward_busy"]


@dataclass
class _Batch(Generic[T]):
    items: Sequence[T]
    prepared: Future[PreparedPhotos]


def forward(encoders, prepared: PreparedPhotos, clock: PipelineClock) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoders' forward passes on a prepared batch (only queued on a GPU)."""
    cuda = encoders.device.type == "cuda"
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    features = clock.timed("forward", encoders.encode_prepared, prepared)
    if cuda:
        end.record()
        clock._events.append((start, end))
    return features


def embed_batches(encoders, preparer: PhotoBatchPreparer, take: Callable[[], Sequence[T]],
                  path_of: Callable[[T], str], store: Callable[[Sequence[T], PreparedPhotos, Features], None], *,
                  prefetch: int, deadline: float, clock: PipelineClock) -> bool:
    """Embed the batches `take` gives until it gives an empty one (returns True) or the monotonic
    `deadline` has passed (returns False; the batches already taken are finished). At least one
    batch is taken, whatever the deadline. `store` gets each batch's items, its preparation
    (which positions decoded, the errors of the others) and the features of the decoded ones."""
    ahead: deque[_Batch[T]] = deque()
    exhausted = False
    overlap = encoders.device.type == "cuda"

    def take_one(pool: ThreadPoolExecutor) -> bool:
        nonlocal exhausted
        items = clock.timed("take", take)
        if not items:
            exhausted = True
            return False
        ahead.append(_Batch(items, pool.submit(preparer.prepare, [path_of(item) for item in items])))
        return True

    def fill(pool: ThreadPoolExecutor) -> None:
        while len(ahead) < max(1, prefetch) and not exhausted and time.monotonic() < deadline and take_one(pool):
            pass

    def finish(items: Sequence[T], prepared: PreparedPhotos, features: Features) -> None:
        clock.add(prepared.seconds)
        clock.timed("store", store, items, prepared, features)

    with ThreadPoolExecutor(1, thread_name_prefix="cletir-prefetch") as pool:
        try:
            take_one(pool)
            fill(pool)
            previous = None
            while ahead:
                batch = ahead.popleft()
                try:
                    prepared = clock.timed("prepare_wait", batch.prepared.result)
                    features = forward(encoders, prepared, clock)
                finally:  # the batch before is stored even when this one fails
                    if previous is not None:
                        finish(*previous)  # on a GPU: while it runs this batch's passes
                        previous = None
                fill(pool)
                embedded = (batch.items, prepared, clock.timed("forward", features_to_numpy, features))
                if overlap:
                    previous = embedded
                else:
                    finish(*embedded)
            if previous is not None:
                finish(*previous)
        finally:
            for batch in ahead:
                batch.prepared.cancel()
    return exhausted
