"""Progress bars for the management commands people wait on (tqdm, drawn on stderr).

A bar is drawn only where someone watches it: stderr is a terminal and the command was not
given `--no-progress`. Otherwise the bar is disabled (tqdm draws nothing and costs nothing), so
a command's loop is the same either way and its log files get no carriage-return noise.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

NO_PROGRESS_HELP = "draw no progress bar (none is drawn either when stderr is not a terminal)"


def add_progress_argument(parser) -> None:
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def progress_bar(stderr, total: int | None, unit: str, wanted: bool = True, **options) -> tqdm:
    """A bar on `stderr` (a command's self.stderr, or a stream) counting `unit`s, with rate and
    ETA when `total` is known; disabled unless `wanted` and stderr is a terminal."""
    # Django's OutputWrapper ends every write with a newline, which would stack the bar's
    # redraws line under line: the bar writes to the stream inside it.
    stream = getattr(stderr, "_out", stderr)
    shown = wanted and _is_terminal(stream)
    # " photos": tqdm writes the unit right after the count ("5 photos", "12.3 photos/s").
    return tqdm(total=total, unit=f" {unit}", file=stream, disable=not shown, dynamic_ncols=True, **options)


@contextmanager
def above(bar: tqdm) -> Iterator[None]:
    """Lines printed inside this block appear above the bar instead of through it."""
    bar.clear()
    try:
        yield
    finally:
        bar.refresh()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
