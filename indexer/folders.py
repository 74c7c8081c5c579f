"""Watched folders: the folders a library keeps up to date (remembered in the catalog across
restarts), each scan of one queued as an ingest, and the watcher that follows them in the
serving process (:class:`indexer.watch.FolderWatcher`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from . import catalog
from .catalog import Job
from .context import MAX_LIST, CatalogContext, as_id
from .errors import IndexerError, NotFound, PathNotAllowed
from .ingest_problems import (
    PROBLEMS_PAGE_DEFAULT,
    PROBLEMS_PAGE_MAX,
    FolderProblemPage,
    folder_problems,
    problem_count,
)
from .job_queue import JobService
from .safe_files import is_within, resolve_roots
from .scan import has_image_extension
from .types import FolderInfo, JobInfo

if TYPE_CHECKING:
    from .watch import FolderWatcher

log = logging.getLogger(__name__)

__all__ = ["WATCH_HEARTBEAT_S", "FolderEntry", "FolderListing", "FolderService", "browse_folders"]

WATCH_HEARTBEAT_S = 10.0  # how often a watcher marks its folders watched in the catalog


class FolderService:
    """The watched folders of one library, and its watcher when this process runs one."""

    def __init__(self, ctx: CatalogContext, jobs: JobService) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.watcher: FolderWatcher | None = None  # running in this process (start_watcher)

    # what a FolderWatcher reads of the library it follows
    @property
    def Session(self) -> sessionmaker[Session]:
        return self.ctx.Session

    @property
    def data_dir(self) -> Path:
        return self.ctx.data_dir

    def add_watched_folder(
        self, path: str, recursive: bool = True, if_changed: bool = False
    ) -> FolderInfo:
        """Keep a folder up to date: remembered in the catalog (across restarts), watched by
        the serving process's watcher, re-scanned periodically; an ingest is queued now. Adding
        a folder already watched queues a re-scan of it (``if_changed``: only if it differs
        from the catalog, as ``serve --images`` does at each start)."""
        folder = self.jobs.check_ingest_path(path)
        db_path = catalog.path_to_db(folder)
        with self.ctx.session() as session:
            row = session.scalar(
                sa.select(catalog.WatchedFolder).where(catalog.WatchedFolder.path == db_path)
            )
            known = row is not None
            if row is None:
                row = catalog.WatchedFolder(path=db_path, recursive=bool(recursive))
                session.add(row)
                try:
                    session.commit()
                except sa.exc.IntegrityError:  # added at the same moment by another process
                    session.rollback()
            found = session.execute(
                sa.select(catalog.WatchedFolder.id, catalog.WatchedFolder.recursive).where(
                    catalog.WatchedFolder.path == db_path
                )
            ).first()
        assert found is not None
        folder_id = int(found[0])
        if self.watcher is not None:  # watched before its ingest scans it: nothing falls between
            self.watcher.watch_now(folder_id, catalog.path_from_db(db_path), bool(found[1]))
        self.scan_watched_folder(folder_id, if_changed=if_changed and known)
        return self.get_watched_folder(folder_id)

    def remove_watched_folder(self, folder_id: int) -> FolderInfo:
        """Stop watching a folder (its images stay in the library)."""
        info = self.get_watched_folder(folder_id)
        with self.ctx.session() as session:
            session.execute(
                sa.delete(catalog.WatchedFolder).where(catalog.WatchedFolder.id == info.id)
            )
            session.commit()
        return info

    def scan_watched_folder(
        self, folder_id: int, sub_path: str | None = None, if_changed: bool = False
    ) -> JobInfo | None:
        """Queue an ingest of a watched folder (or of ``sub_path`` inside it, what changed),
        unless an ingest of that path is queued and not started yet (or, ``if_changed``, the
        folder matches the catalog: see :func:`indexer.watch.folder_changes`). Returns the job
        queued."""
        with self.ctx.session() as session:
            row = session.get(catalog.WatchedFolder, as_id(folder_id, "folder"))
            if row is None:
                raise NotFound(f"folder {folder_id} is not watched")
            root, recursive = catalog.path_from_db(row.path), row.recursive
        target = sub_path or root
        db_target = catalog.path_to_db(os.path.abspath(target))
        with self.ctx.session() as session:  # queued jobs: an index read on the job state
            for params in session.scalars(
                sa.select(Job.params).where(Job.state == "queued", Job.kind == "ingest")
            ):
                if isinstance(params, dict) and params.get("path") == db_target:
                    return None
        job = None
        if if_changed:
            from .watch import folder_changes

            why = folder_changes(
                self.ctx.Session, target, recursive or target != root, self.ctx.roots
            )
            log.info("watched folder %s: %s", target, why or "unchanged, no ingest queued")
        if not if_changed or why is not None:
            job = self.jobs.submit_ingest(target, recursive=recursive or target != root)
        with self.ctx.session() as session:
            session.execute(
                sa.update(catalog.WatchedFolder)
                .where(catalog.WatchedFolder.id == folder_id)
                .values(
                    last_scan_at=catalog.utcnow(),
                    **({"last_job_id": job.id} if job is not None else {}),
                )
            )
            session.commit()
        return job

    def get_watched_folder(self, folder_id: int) -> FolderInfo:
        with self.ctx.session() as session:
            row = session.get(catalog.WatchedFolder, as_id(folder_id, "folder"))
            if row is None:
                raise NotFound(f"folder {folder_id} is not watched")
            return _folder_info(session, row)

    def watched_folder_problems(
        self, folder_id: int, limit: int = PROBLEMS_PAGE_DEFAULT, after: str | None = None
    ) -> FolderProblemPage:
        """A watched folder's current problems (issue 24): the files under it that are not in
        the library and why (indexer.ingest_problems), ``limit`` by path after ``after`` (the
        previous page's ``next_after``: a file's path within the folder), and how many."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise IndexerError(f"limit must be a whole number, got {limit!r}")
        if not 1 <= limit <= PROBLEMS_PAGE_MAX:
            raise IndexerError(f"limit must be between 1 and {PROBLEMS_PAGE_MAX}, got {limit}")
        if after is not None and (
            not isinstance(after, str)
            or not after
            or after.startswith("/")
            or "\x00" in after
            or len(after) > 4096
        ):
            raise IndexerError("after is a file's path within the folder: pass next_after")
        with self.ctx.session() as session:
            row = session.get(catalog.WatchedFolder, as_id(folder_id, "folder"))
            if row is None:
                raise NotFound(f"folder {folder_id} is not watched")
            path = catalog.path_from_db(row.path)
            base = row.path.rstrip("/") + "/"
            last = None if after is None else base + after
            items = folder_problems(session, path, row.recursive, limit=limit, after=last)
            total = problem_count(session, row.path, row.recursive)
            more = len(items) == limit and items[-1].path.startswith(base)
            return FolderProblemPage(
                row.id,
                row.path,
                items,
                max(total, len(items)),
                items[-1].path[len(base) :] if more else None,
            )

    def list_watched_folders(self) -> list[FolderInfo]:
        """The watched folders, in the order they were added, with their state."""
        with self.ctx.session() as session:
            rows = session.scalars(
                sa.select(catalog.WatchedFolder).order_by(catalog.WatchedFolder.id).limit(MAX_LIST)
            ).all()
            return [_folder_info(session, r) for r in rows]

    # ---- the watcher

    def start_watcher(
        self, rescan_interval_s: float = 3600.0, debounce_s: float = 2.0
    ) -> FolderWatcher:
        """Watch the catalog's watched folders in this process (stopped by :meth:`stop_watcher`)."""
        from .watch import FolderWatcher

        if self.watcher is None:
            self.watcher = FolderWatcher(
                self,
                rescan_interval_s=rescan_interval_s,
                debounce_s=debounce_s,
                heartbeat_s=WATCH_HEARTBEAT_S,
            )
            self.watcher.start()
        return self.watcher

    def stop_watcher(self) -> None:
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                self.watcher.stop()
            self.watcher = None


def _folder_info(session: Session, row: catalog.WatchedFolder) -> FolderInfo:
    job = session.get(Job, row.last_job_id) if row.last_job_id else None
    last = catalog.job_info(job) if job is not None else None
    if not os.path.isdir(catalog.path_from_db(row.path)):
        state = "missing"
    elif last is not None and last.state in ("queued", "running"):
        state = "scanning"
    elif (
        row.watched_at is not None
        and (catalog.utcnow() - row.watched_at).total_seconds() < 3 * WATCH_HEARTBEAT_S
    ):
        state = "watching"  # a watcher (in this process or another) said so recently
    else:
        state = "idle"
    return FolderInfo(
        id=row.id,
        path=row.path,
        recursive=row.recursive,
        state=state,
        created_at=row.created_at,
        last_scan_at=row.last_scan_at,
        last_job=last,
    )


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from .facade import FoldersApi

    _folders_is_a_folders_api: type[FoldersApi] = FolderService


# ---- the folder browser: what a person may pick from, without typing a server path

BROWSE_ENTRIES_MAX = 500  # sub-folders listed per folder
BROWSE_READ_MAX = 20_000  # directory entries read per request (counting pictures included)


@dataclass(frozen=True)
class FolderEntry:
    """A folder the browser lists: its name, its path, and how many pictures it holds directly
    (None when counting was cut short: a very large folder)."""

    name: str
    path: str
    images: int | None


@dataclass(frozen=True)
class FolderListing:
    """One folder under an allowed root (``path`` None: the roots themselves), its pictures, and
    its sub-folders; ``parent`` is None at a root: nothing above a root is ever listed."""

    path: str | None
    parent: str | None
    images: int | None
    folders: list[FolderEntry]
    truncated: bool


class _Budget:
    def __init__(self, entries: int) -> None:
        self.left = entries


def _scan_folder(real: str, budget: _Budget) -> tuple[list[tuple[str, str]], int | None]:
    """(sub-folders as (name, path), pictures directly inside) of ``real``: links are not
    followed (a link to a folder is not listed: it could lead out of the root), hidden entries
    are left out, and only names are read."""
    subdirs: list[tuple[str, str]] = []
    images = 0
    try:
        with os.scandir(real) as entries:
            for entry in entries:
                budget.left -= 1
                if budget.left < 0:
                    return subdirs, None
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((entry.name, os.path.join(real, entry.name)))
                elif entry.is_file(follow_symlinks=False) and has_image_extension(entry.name):
                    images += 1
    except OSError:
        return subdirs, None  # unreadable: listed, not counted
    return subdirs, images


def browse_folders(
    roots: Sequence[str | os.PathLike[str]], path: str | None = None
) -> FolderListing:
    """The allowed roots (``path`` None), or the sub-folders of ``path``, which must resolve
    (links included) to a folder inside one of ``roots``; each with its count of pictures.

    Raises :class:`PathNotAllowed` for a path outside the roots (or no roots at all) and
    :class:`NotFound` for a folder under a root that does not exist."""
    real_roots = resolve_roots(roots)
    if not real_roots:
        raise PathNotAllowed("no folder may be added from here: the server has no allowed roots")
    budget = _Budget(BROWSE_READ_MAX)
    if path is None:
        listed = [(r, r) for r in real_roots]
        here_images: int | None = None
        parent = None
    else:
        if "\x00" in path or not os.path.isabs(path):
            raise PathNotAllowed(
                f"path {path[:200]!r} must be an absolute path under an allowed root"
            )
        real = os.path.realpath(path)
        root = next((r for r in real_roots if is_within(real, r)), None)
        if root is None:
            raise PathNotAllowed(f"path {path[:200]!r} is outside the allowed roots")
        if not os.path.isdir(real):
            raise NotFound(f"no folder {path[:200]!r} under the allowed roots")
        listed, here_images = _scan_folder(real, budget)
        listed.sort(key=lambda item: item[0].lower())
        parent = None if real == root else os.path.dirname(real)
    truncated = len(listed) > BROWSE_ENTRIES_MAX
    folders = []
    for name, sub in listed[:BROWSE_ENTRIES_MAX]:
        _, count = _scan_folder(sub, budget) if budget.left > 0 else ([], None)
        folders.append(FolderEntry(name=name, path=sub, images=count))
    return FolderListing(
        path=None if path is None else os.path.realpath(path),
        parent=parent,
        images=here_images,
        folders=folders,
        truncated=truncated or budget.left < 0,
    )
