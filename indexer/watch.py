"""Watched folders kept up to date: file-system events become ingest jobs, with a periodic
re-scan as the safety net.

:class:`FolderWatcher` runs in one process of a library (``clipsearch serve``): it follows the
catalog's ``watched_folders`` (re-read every ``reload_s``, so a folder added through the API or
the CLI of another process is picked up), watches each with ``watchdog`` (inotify on Linux), and
turns events into the usual ingest jobs:

* **Debounced and batched.** Events are collected per watched folder; once none came for
  ``debounce_s`` (or ``max_wait_s`` after the first, for a folder that never goes quiet), one
  ingest is queued for the deepest folder that holds every change (a photo added to
  ``2024/june`` re-scans that folder only). A rescan costs a stat per unchanged file.
* **A file is ingested once it stops changing.** A changed file counts as settled when its
  size and mtime are the same at two looks ``debounce_s`` apart (or its mtime is that old); a
  folder whose changed files are still changing is held, even past ``max_wait_s``. A file that
  changes again after it was queued (still growing) must then stay unchanged twice as long each
  time (up to ``MAX_SETTLE_FACTOR`` x ``debounce_s``): a file appended to every few seconds is
  ingested when it stops, not once per event (it was ~1,400 jobs an hour).
* **Never twice in the queue.** An ingest of the same path that is queued and not started yet is
  not queued again (:meth:`Library.scan_watched_folder`).
* **A safety net.** Every ``rescan_interval_s`` (and once when the watcher starts, for what
  changed while nothing watched) each folder is re-scanned whole: network drives and some
  container mounts deliver no events.
* **No empty jobs.** Those re-scans (and ``serve --images`` on a folder watched already) first
  compare the folder with the catalog (:func:`folder_changes`: a stat per file, nothing opened
  but new files); an unchanged folder gets no job, so restarts and hourly re-scans do not fill
  the job list with "nothing new".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from . import catalog
from .decode import retry_on_rescan
from .errors import IndexerError
from .scan import OUTSIDE_ROOTS, scan_folder
from .types import JobInfo, ScanProblem

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

    from watchdog.events import FileSystemEvent

log = logging.getLogger(__name__)

TICK_S = 0.2


#: Changed files whose settling is followed per folder (beyond, a change counts as settled).
MAX_TRACKED_FILES = 2000
#: A file changed again after it was queued (a download or a recording still being written)
#: must then stay unchanged twice as long each time, up to this many times ``debounce_s``.
MAX_SETTLE_FACTOR = 64


@dataclass
class _Pending:
    dirs: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0
    # changed file -> ((size, mtime_ns), when that was first seen), None before its first look
    files: dict[str, tuple[tuple[int, int], float] | None] = field(default_factory=dict)
    next_check: float = 0.0


class WatchedLibrary(Protocol):
    """What the watcher reads of its library (indexer.folders.FolderService, the Library)."""

    @property
    def Session(self) -> sessionmaker[Session]: ...

    @property
    def data_dir(self) -> Path: ...

    def scan_watched_folder(
        self, folder_id: int, sub_path: str | None = None, if_changed: bool = False
    ) -> JobInfo | None: ...


class FolderWatcher:
    """Watch the catalog's watched folders for one library (see the module docstring)."""

    def __init__(
        self,
        library: WatchedLibrary,
        rescan_interval_s: float = 3600.0,
        debounce_s: float = 2.0,
        reload_s: float = 2.0,
        max_wait_s: float | None = None,
        heartbeat_s: float = 10.0,
    ) -> None:
        self.library = library
        self.rescan_interval_s = float(rescan_interval_s)
        self.debounce_s = float(debounce_s)
        self.reload_s = float(reload_s)
        self.max_wait_s = float(max_wait_s) if max_wait_s is not None else 5 * self.debounce_s
        self._folders: dict[str, tuple[int, bool]] = {}  # fs path -> (id, recursive)
        self._watches: dict[str, Any] = {}  # fs path -> watchdog ObservedWatch
        self._pending: dict[int, _Pending] = {}
        self._last_rescan: dict[int, float] = {}
        self._lock = threading.Lock()  # the pending events (watchdog's thread and ours)
        self._folders_lock = threading.Lock()  # the folders and watches (ours and watch_now's)
        self._added: dict[str, float] = {}  # fs path -> when watch_now added it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._started = 0.0
        self._ignored = str(library.data_dir)
        self.heartbeat_s = heartbeat_s
        self._next_heartbeat = 0.0
        # file -> (settle level, when last queued): a file queued and changed again is growing
        self._growing: dict[str, tuple[int, float]] = {}

    # ---- lifecycle

    def start(self) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="clipsearch-watch", daemon=True)
        self._thread.start()
        log.info("watching folders (re-scan every %.0f s)", self.rescan_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):  # no longer watched: say so at once
            self._heartbeat(
                [self._folders[p][0] for p in self._watches if p in self._folders], None
            )
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)

    # ---- the loop

    def _run(self) -> None:
        next_reload = 0.0
        first = True
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_reload:
                    self._reload(catch_up=first)
                    first = False
                    next_reload = now + self.reload_s
                self._flush(now)
                self._rescan(now)
            except Exception as exc:  # the catalog away for a moment: try again next tick
                log.warning("folder watcher: %s", exc)
                next_reload = now + self.reload_s
            self._stop.wait(TICK_S)

    def _reload(self, catch_up: bool) -> None:
        """Follow the catalog's list: watch new folders, drop removed ones."""
        read_at = time.monotonic()
        with self.library.Session() as session:
            rows = session.execute(
                sa.select(
                    catalog.WatchedFolder.id,
                    catalog.WatchedFolder.path,
                    catalog.WatchedFolder.recursive,
                    catalog.WatchedFolder.last_scan_at,
                ).limit(1000)
            ).all()
        wanted = {catalog.path_from_db(p): (int(i), bool(r), last) for i, p, r, last in rows}
        with self._folders_lock:
            # a folder watch_now added after the list was read is not in it yet: kept
            fresh = {p for p, at in self._added.items() if at >= read_at}
            self._added = {p: self._added[p] for p in fresh}
            behind = self._follow(wanted, fresh, catch_up)
            watched = [self._folders[p][0] for p in self._watches if p in self._folders]
        for folder_id in behind:  # what changed while nothing watched
            self._queue(folder_id, None, if_changed=True)
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat(watched)
            self._next_heartbeat = time.monotonic() + self.heartbeat_s

    def _follow(
        self,
        wanted: dict[str, tuple[int, bool, dt.datetime | None]],
        fresh: set[str],
        catch_up: bool,
    ) -> list[int]:
        """Watch what ``wanted`` (the catalog's list) and ``fresh`` (added by watch_now since the
        list was read) hold and nothing else; returns the folders to re-scan for what changed
        while nothing watched (``catch_up``: the first reload)."""
        behind: list[int] = []
        for path in list(self._watches):
            if (path not in wanted and path not in fresh) or not os.path.isdir(path):
                self._unschedule(path)
        now = time.monotonic()
        for path, (folder_id, recursive, last_scan) in wanted.items():
            self._folders[path] = (folder_id, recursive)
            if folder_id not in self._last_rescan:
                # when it was last scanned (by anyone): the periodic re-scan counts from there
                age = (
                    (catalog.utcnow() - last_scan).total_seconds()
                    if last_scan is not None
                    else float("inf")
                )
                self._last_rescan[folder_id] = now - min(age, 1e9)
                if catch_up and age > 60:
                    behind.append(folder_id)
            if path not in self._watches and os.path.isdir(path):
                self._schedule(path, recursive)
        for path in [p for p in self._folders if p not in wanted and p not in fresh]:
            del self._folders[path]
        return behind

    def watch_now(self, folder_id: int, path: str, recursive: bool) -> None:
        """Watch a folder just added (in this process) at once, before its first ingest is
        queued: a file copied in after that ingest's scan is then an event, where waiting for the
        next reload (``reload_s``) would leave it to the periodic re-scan, an hour later."""
        with self._folders_lock:
            self._added[path] = time.monotonic()
            self._folders[path] = (int(folder_id), bool(recursive))
            self._last_rescan.setdefault(int(folder_id), time.monotonic())
            if self._observer is not None and path not in self._watches and os.path.isdir(path):
                self._schedule(path, bool(recursive))

    def _heartbeat(
        self, folder_ids: list[int], stamp: dt.datetime | Literal["now"] | None = "now"
    ) -> None:
        """Mark these folders watched (``stamp`` None: no longer) so every process can tell."""
        if not folder_ids:
            return
        value = catalog.utcnow() if stamp == "now" else stamp
        with self.library.Session() as session:
            session.execute(
                sa.update(catalog.WatchedFolder)
                .where(catalog.WatchedFolder.id.in_(folder_ids))
                .values(watched_at=value)
            )
            session.commit()

    def _schedule(self, path: str, recursive: bool) -> None:
        try:
            watch = self._observer.schedule(_Handler(self, path), path, recursive=recursive)
        except OSError as exc:  # inotify watch limit, a folder that went away
            log.warning("cannot watch %s (%s); the periodic re-scan still covers it", path, exc)
            return
        self._watches[path] = watch
        self._next_heartbeat = 0.0  # say so now
        log.info("watching %s", path)

    def _unschedule(self, path: str) -> None:
        watch = self._watches.pop(path, None)
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(watch)
            log.info("no longer watching %s", path)

    def event(self, root: str, path: str, is_directory: bool) -> None:
        """A change under ``root`` (called from watchdog's thread)."""
        if path == self._ignored or path.startswith(self._ignored + os.sep):
            return  # the library's own thumbnails and index files
        if os.path.basename(path).startswith("."):
            return  # hidden and temporary files: scans skip them
        info = self._folders.get(root)
        if info is None:
            return
        folder = os.path.dirname(path) if not is_directory or path != root else path
        now = time.monotonic()
        with self._lock:
            pending = self._pending.setdefault(info[0], _Pending(first=now))
            pending.dirs.add(folder)
            pending.last = now
            if not is_directory and len(pending.files) < MAX_TRACKED_FILES:
                pending.files[path] = None  # changed: its next look starts over
            grown = self._growing.get(path)
            if grown is not None:  # changed again after it was queued: settle for longer
                level, queued_at = grown
                if now - queued_at <= self.debounce_s * MAX_SETTLE_FACTOR * 2:
                    self._growing[path] = (min(level + 1, _max_level()), now)
                else:
                    del self._growing[path]

    def _settle_window(self, path: str) -> float:
        level = self._growing.get(path, (0, 0.0))[0]
        return float(self.debounce_s * (2**level))

    def _unsettled(self, pending: _Pending, now: float) -> float | None:
        """None when every changed file of ``pending`` has stopped changing; else how long to
        wait before looking again. Records what each file looks like now."""
        wait: float | None = None
        wall = time.time()
        for path, seen in list(pending.files.items()):
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:  # gone: a deletion is a change to ingest now
                pending.files.pop(path, None)
                continue
            cur = (int(st.st_size), int(st.st_mtime_ns))
            window = self._settle_window(path)
            if seen is None or seen[0] != cur:
                pending.files[path] = (cur, now)
                if wall - st.st_mtime >= window:  # unchanged for the window already
                    continue
                left = window
            elif now - seen[1] >= window:
                continue
            else:
                left = window - (now - seen[1])
            wait = left if wait is None else min(wait, left)
        return wait

    def _flush(self, now: float) -> None:
        ready: list[tuple[int, set[str]]] = []
        with self._lock:
            for folder_id, p in list(self._pending.items()):
                if now < p.next_check:
                    continue
                if now - p.last >= self.debounce_s or now - p.first >= self.max_wait_s:
                    wait = self._unsettled(p, now)
                    if wait is not None:  # a file still being written: hold the folder
                        p.next_check = now + max(wait, TICK_S)
                        continue
                    ready.append((folder_id, p.dirs))
                    for path in p.files:
                        level = self._growing.get(path, (0, 0.0))[0]
                        self._growing[path] = (level, now)
                    del self._pending[folder_id]
            if len(self._growing) > 4 * MAX_TRACKED_FILES:  # forget the oldest half
                oldest = sorted(self._growing.items(), key=lambda kv: kv[1][1])
                for path, _ in oldest[: len(oldest) // 2]:
                    del self._growing[path]
        if ready:
            with self._folders_lock:
                roots = {i: r for r, (i, _) in self._folders.items()}
        for folder_id, dirs in ready:
            root = roots.get(folder_id)
            if root is None:
                continue
            self._queue(folder_id, _changed_folder(root, dirs))

    def _rescan(self, now: float) -> None:
        if self.rescan_interval_s <= 0:
            return
        with self._folders_lock:
            folders = list(self._folders.values())
        for folder_id, _recursive in folders:
            if now - self._last_rescan.get(folder_id, now) >= self.rescan_interval_s:
                self._queue(folder_id, None, if_changed=True)

    def _queue(self, folder_id: int, sub_path: str | None, if_changed: bool = False) -> None:
        if sub_path is None:
            self._last_rescan[folder_id] = time.monotonic()
        try:
            job = self.library.scan_watched_folder(folder_id, sub_path, if_changed=if_changed)
        except Exception as exc:  # a folder removed meanwhile, outside the roots, ...
            log.warning("watched folder %s: no ingest queued (%s)", folder_id, exc)
            return
        if job is not None:
            what = sub_path or "the whole folder"
            log.info("watched folder %s changed: job %s ingests %s", folder_id, job.id, what)


def _max_level() -> int:
    return max(0, MAX_SETTLE_FACTOR.bit_length() - 1)


def _changed_folder(root: str, dirs: set[str]) -> str | None:
    """The deepest existing folder under ``root`` holding every changed folder (None: root)."""
    try:
        common = os.path.commonpath([root, *dirs]) if len(dirs) > 1 else next(iter(dirs))
    except ValueError:
        return None
    if common != root and not common.startswith(root.rstrip(os.sep) + os.sep):
        return None
    while common != root and not os.path.isdir(common):
        common = os.path.dirname(common)
    return None if common == root else common


def folder_changes(
    sessions: sessionmaker[Session],
    root: str,
    recursive: bool = True,
    allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
) -> str | None:
    """What an ingest of ``root`` would find to do, in words, or None when the folder matches
    the catalog: no new file (other than ones the user removed from the library), none changed
    (size and mtime), none gone, no image waiting to be embedded, no failure worth retrying.

    A stat per catalogued file; only a file the catalog does not know is opened (to tell an
    image by its first bytes, and to hash it when its size matches a removed file's). Stops at
    the first difference. A folder that cannot be read counts as changed: the ingest will say
    why in its job."""
    root_db = catalog.path_to_db(os.path.abspath(root))
    where = catalog.under_folder(catalog.Image.folder, root_db, recursive)
    with sessions() as s:
        if s.scalar(sa.select(catalog.Image.id).where(where, catalog.Image.state == "pending")):
            return "images waiting to be embedded"
        rows = {
            path: (int(size), int(mtime), state, error)
            for path, size, mtime, state, error in s.execute(
                sa.select(
                    catalog.Image.path,
                    catalog.Image.size,
                    catalog.Image.mtime_ns,
                    catalog.Image.state,
                    catalog.Image.error,
                ).where(where)
            )
        }
    problems: list[ScanProblem] = []
    new: dict[str, tuple[str, int]] = {}  # db path -> (fs path, size)
    seen: set[str] = set()
    try:
        for f in scan_folder(
            root,
            recursive=recursive,
            on_problem=problems,
            allowed_roots=allowed_roots,
            known=lambda p, size, mtime: (
                rows.get(catalog.path_to_db(p), (0, 0))[:2] == (size, mtime)
            ),
        ):
            db_path = catalog.path_to_db(f.path)
            seen.add(db_path)
            row = rows.get(db_path)
            if row is None:
                new[db_path] = (f.path, f.size)
            elif row[:2] != (f.size, f.mtime_ns):
                return f"{f.path} changed"
            elif row[2] == "failed" and retry_on_rescan(row[3]):
                return f"{f.path} is to be tried again"
    except (IndexerError, OSError) as exc:
        return str(exc)
    kept = [catalog.path_to_db(p.path) for p in problems if p.reason != OUTSIDE_ROOTS]
    for db_path in rows:
        if db_path not in seen and not any(
            db_path == k or db_path.startswith(k.rstrip("/") + "/") for k in kept
        ):
            return f"{catalog.path_from_db(db_path)} is gone"
    if new:
        with sessions() as s:
            refused = catalog.removed_paths(s, list(new))
            others = {p: v for p, v in new.items() if p not in refused}
            by_size = catalog.removed_content_by_size(s, [size for _, size in others.values()])
        for fs_path, size in others.values():
            if size not in by_size or _sha256(fs_path) not in by_size[size]:
                return f"{fs_path} is new"
    return None


def _sha256(path: str) -> str | None:
    try:  # non-blocking: a file swapped for a FIFO since the scan does not hang the watcher
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


class _Handler:
    """watchdog's handler for one watched folder: every event goes to the watcher."""

    def __init__(self, watcher: FolderWatcher, root: str) -> None:
        self.watcher = watcher
        self.root = root

    def dispatch(self, event: FileSystemEvent) -> None:
        if getattr(event, "event_type", "") in ("opened", "closed_no_write"):
            return
        for attr in ("src_path", "dest_path"):
            path = os.fsdecode(getattr(event, attr, "") or "")
            if path:
                self.watcher.event(self.root, path, bool(event.is_directory))
