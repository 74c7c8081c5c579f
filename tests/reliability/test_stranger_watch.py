"""Issue 22, item 8: a file that keeps growing in a watched folder is ingested once it stops
changing, not once per event (it was an ingest every few seconds, ~1,400 jobs an hour).

A real library, its real watcher thread on inotify, and a writer appending to a file: fast (never
quiet for the debounce) and slow (quiet for a little longer than the debounce between writes).
What the watcher decides to queue is recorded; the catalog's queue would hide repeats (an ingest
queued and not started is not queued twice), so the decisions themselves are counted.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "indexer") not in sys.path:
    sys.path.append(str(REPO / "tests" / "indexer"))

from workerutil import make_images, wait_for  # noqa: E402

from clipsearch.indexer.library import Library, LibraryConfig  # noqa: E402
from clipsearch.indexer.watch import FolderWatcher  # noqa: E402

pytestmark = pytest.mark.slow

DEBOUNCE_S = 0.5


class _Recording(FolderWatcher):
    """The real watcher; each ingest it queues is recorded with the growing file's size then."""

    def __init__(self, *args: Any, growing: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.growing = growing
        self.queued: list[tuple[float, int]] = []

    def _queue(self, folder_id: int, sub_path: str | None, if_changed: bool = False) -> None:
        size = self.growing.stat().st_size if self.growing.exists() else -1
        self.queued.append((time.monotonic(), size))
        super()._queue(folder_id, sub_path, if_changed)


@pytest.fixture()
def watched(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[_Recording, Path]]:
    photos = tmp_path / "photos"
    make_images(photos, 1, seed=5)
    growing = photos / "recording.jpg"
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    watcher = _Recording(
        lib,
        growing=growing,
        rescan_interval_s=0,
        debounce_s=DEBOUNCE_S,
        reload_s=3600.0,
        max_wait_s=3 * DEBOUNCE_S,
    )
    lib.watcher = watcher
    watcher.start()
    lib.add_watched_folder(str(photos))  # watched at once (watch_now), its first ingest queued
    try:
        yield watcher, growing
    finally:
        lib.close()


def _append(path: Path, every_s: float, for_s: float) -> float:
    """Append to ``path`` every ``every_s`` for ``for_s``; returns when the last write was."""
    stop = time.monotonic() + for_s
    chunk = b"\xff\xd8" + b"\x00" * 4096
    last = time.monotonic()
    with path.open("ab") as fh:
        while time.monotonic() < stop:
            fh.write(chunk)
            fh.flush()
            last = time.monotonic()
            threading.Event().wait(every_s)  # the writer's pace, not a synchronisation
    return last


@pytest.mark.parametrize(
    ("every_s", "for_s", "max_during"),
    [
        # never quiet for the debounce: held past max_wait until it stops (0 measured; 1 allowed
        # for a writer stalled past the debounce on a loaded host; it was 3)
        (0.1, 6.0, 1),
        # quiet a little longer than the debounce between writes: 1 measured (the first write,
        # before the file was known to grow), it was 7
        (2.5 * DEBOUNCE_S, 10.0, 2),
    ],
)
def test_a_growing_file_is_ingested_once_it_stops_changing(
    watched: tuple[_Recording, Path], every_s: float, for_s: float, max_during: int
) -> None:
    watcher, growing = watched
    wait_for(lambda: bool(watcher._watches), 30, "the folder watched")
    started = time.monotonic()
    last_write = _append(growing, every_s, for_s)
    final = growing.stat().st_size
    wait_for(
        lambda: any(at > last_write and size == final for at, size in watcher.queued),
        60,
        "an ingest once the file stopped changing",
    )
    during = [q for q in watcher.queued if started <= q[0] <= last_write]
    after = [q for q in watcher.queued if q[0] > last_write]
    print(
        f"every {every_s} s for {for_s} s: {len(during)} queued while growing, {len(after)} after"
    )
    # Before: one ingest per max_wait_s (fast writer) or per write (slow writer), forever.
    assert len(during) <= max_during
    assert len(after) == 1 and after[0][1] == final
