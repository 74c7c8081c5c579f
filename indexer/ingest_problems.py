"""The files of a folder an ingest could not take in, each reported once (issue 24).

Two kinds, one list per folder (:func:`folder_problems`):

* an entry the scan met and could not take (a symbolic link leading out of the allowed roots,
  an entry it cannot read): a row of ``file_problems`` (migration 0011), keyed by the path, with
  what is wrong and the entry's own size and modification time (``lstat``: a link retargeted is
  a new entry). A rescan that meets the same entry, unchanged, with the same problem reports
  nothing new; a changed entry or another problem is reported again; an entry that is gone or
  fixed leaves the table (:func:`record_scan_problems`).
* a file that could not be decoded (a corrupt image): its ``images`` row is ``failed`` with the
  reason. It is reported by the job that tried it; an unchanged file is not tried again, a
  changed one is (indexer.ingest).

So a job's errors list what that job found wrong for the first time, and the folder's current
problems are one call away for every door.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from clipsearch.indexer.catalog import (
    Base,
    Image,
    UTCDateTime,
    bytewise_text,
    folder_of,
    path_range,
    path_to_db,
    under_folder,
    utcnow,
)
from clipsearch.indexer.types import ScanProblem

__all__ = [
    "PROBLEMS_PAGE_DEFAULT",
    "PROBLEMS_PAGE_MAX",
    "FileProblem",
    "FolderCounts",
    "FolderProblem",
    "FolderProblemPage",
    "folder_counts",
    "folder_problems",
    "problem_count",
    "record_scan_problems",
    "scan_outcome",
]


class FileProblem(Base):
    """An entry a scan could not take in, as last reported (migration 0011)."""

    __tablename__ = "file_problems"

    path: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    folder: Mapped[str] = mapped_column(sa.Text, index=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(sa.BigInteger)
    job_id: Mapped[int | None] = mapped_column(sa.BigInteger)  # the job that reported it
    reported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True)
class FolderProblem:
    """A file of a folder that is not in the library, and why. ``kind``: ``scan`` (the scan
    could not take the entry) or ``decode`` (the file is not a picture that can be read)."""

    path: str
    reason: str
    kind: str
    since: dt.datetime | None = None  # when it was reported (scan) or last tried (decode)


PROBLEMS_PAGE_DEFAULT = 100  # a folder's problems listed per request (API, CLI, gallery)
PROBLEMS_PAGE_MAX = 1000


@dataclass(frozen=True)
class FolderProblemPage:
    """A page of a watched folder's current problems, by path, and how many it has (``total``:
    :attr:`FolderCounts.problems`, which may be more than listed). ``next_after``: the last
    file's path within the folder, to pass as ``after`` for the next page (None on the last)."""

    folder_id: int
    folder: str
    items: list[FolderProblem]
    total: int
    next_after: str | None = None


@dataclass(frozen=True)
class FolderCounts:
    """What a folder holds, counted the way the library's counts are (indexer.stats.ImageCounts:
    the catalog's rows by state) plus the entries its scans could not take in. ``ready``: the
    pictures in the library (searchable, shown); ``failed``: files that could not be decoded;
    ``skipped``: entries the scan could not take (links out of the folder, unreadable entries);
    ``problems``: failed + skipped, the files of the folder that are not in the library."""

    ready: int = 0
    pending: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:  # catalogued files, as ImageCounts.total
        return self.ready + self.pending + self.failed

    @property
    def problems(self) -> int:
        return self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {
            "ready": self.ready,
            "pending": self.pending,
            "failed": self.failed,
            "skipped": self.skipped,
            "total": self.total,
            "problems": self.problems,
        }


def folder_counts(session: Session, folder_db: str, recursive: bool = True) -> FolderCounts:
    """The counts of one folder (catalog text form): the one definition every door shows for a
    folder, as ``indexer.stats`` gives it for the library."""
    ranged = bytewise_text(session)
    by_state = dict(
        session.execute(
            sa.select(Image.state, sa.func.count())
            .where(under_folder(Image.folder, folder_db, recursive, ranged=ranged))
            .group_by(Image.state)
        ).all()
    )
    skipped = session.scalar(
        sa.select(sa.func.count())
        .select_from(FileProblem)
        .where(under_folder(FileProblem.folder, folder_db, recursive, ranged=ranged))
    )
    return FolderCounts(
        ready=int(by_state.get("ready", 0)),
        pending=int(by_state.get("pending", 0)),
        failed=int(by_state.get("failed", 0)),
        skipped=int(skipped or 0),
    )


def _signature(path: str) -> tuple[int | None, int | None]:
    """The entry's own size and modification time (a link's, not its target's)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def record_scan_problems(
    session: Session,
    job_id: int,
    root_db: str,
    recursive: bool,
    problems: Sequence[ScanProblem],
    *,
    keep: Callable[[str], bool] = lambda _p: False,
) -> list[ScanProblem]:
    """Inside the caller's transaction: make ``file_problems`` under the scanned folder what this
    scan found, and return the problems that are new (not recorded before with the same reason,
    size and modification time). A recorded problem the scan did not meet again is dropped (the
    entry is fixed or gone) unless ``keep(db_path)`` says it lies under an entry the scan could
    not read."""
    current: dict[str, tuple[ScanProblem, tuple[int | None, int | None]]] = {
        path_to_db(p.path): (p, _signature(p.path)) for p in problems
    }
    recorded = {
        r.path: r
        for r in session.scalars(
            sa.select(FileProblem).where(
                under_folder(FileProblem.folder, root_db, recursive, ranged=bytewise_text(session))
            )
        )
    }
    new: list[ScanProblem] = []
    for db_path, (problem, (size, mtime_ns)) in current.items():
        row = recorded.get(db_path)
        if row is None:
            row = FileProblem(path=db_path, folder=folder_of(db_path))
            session.add(row)
        elif (row.reason, row.size, row.mtime_ns) == (problem.reason, size, mtime_ns):
            continue
        row.reason, row.size, row.mtime_ns = problem.reason, size, mtime_ns
        row.job_id, row.reported_at = job_id, utcnow()
        new.append(problem)
    gone = [p for p in recorded if p not in current and not keep(p)]
    if gone:
        session.execute(sa.delete(FileProblem).where(FileProblem.path.in_(gone)))
    return new


def scan_outcome(
    session: Session,
    job_id: int,
    root_db: str,
    recursive: bool,
    problems: Sequence[ScanProblem],
    *,
    keep: Callable[[str], bool],
    up_to_date: bool,
) -> tuple[list[ScanProblem], dict[str, int | dict[str, int]]]:
    """An ingest's plan, inside its transaction: record the scan's problems
    (:func:`record_scan_problems`) and return the new ones with the fields they add to the job's
    scan summary: ``new_problems``, and when ``up_to_date`` (nothing to embed, so final) the
    folder's counts as ``library`` (:class:`FolderCounts`)."""
    new = record_scan_problems(session, job_id, root_db, recursive, problems, keep=keep)
    summary: dict[str, int | dict[str, int]] = {"new_problems": len(new)} if problems else {}
    if up_to_date:
        session.flush()
        summary["library"] = folder_counts(session, root_db, recursive).as_dict()
    return new, summary


def _failed_under(folder_db: str, recursive: bool, ranged: bool) -> sa.ColumnElement[bool]:
    """The failed images under a folder: where text sorts by code point, a range of their paths
    (exact for a recursive folder), so that a page reads the folder's pictures in path order up
    to the page's end or the library's failures (``ix_images_state_id``), whichever is fewer,
    never the library."""
    return sa.and_(
        Image.state == "failed", _under(Image.path, Image.folder, folder_db, recursive, ranged)
    )


def _scanned_under(folder_db: str, recursive: bool, ranged: bool) -> sa.ColumnElement[bool]:
    """The recorded scan problems under a folder: a range of their key where it can."""
    return _under(FileProblem.path, FileProblem.folder, folder_db, recursive, ranged)


def _under(
    path: sa.SQLColumnExpression[str],
    folder: sa.SQLColumnExpression[str],
    folder_db: str,
    recursive: bool,
    ranged: bool,
) -> sa.ColumnElement[bool]:
    """Rows whose ``path`` lies in the folder (or below it when ``recursive``): the paths' range
    (``catalog.path_range``: exact below the folder, read in path order on the path's index)
    where text sorts by code point, else the folder condition."""
    if not ranged:
        return under_folder(folder, folder_db, recursive)
    if recursive:
        return path_range(path, folder_db)
    return sa.and_(path_range(path, folder_db), folder == (folder_db.rstrip("/") or "/"))


def problem_count(session: Session, folder_db: str, recursive: bool = True) -> int:
    """:attr:`FolderCounts.problems` alone (failed + skipped): the failures and the recorded
    problems under the folder, through their paths' ranges (or the failures' state index),
    without counting the folder's pictures by state."""
    ranged = bytewise_text(session)
    failed = session.scalar(
        sa.select(sa.func.count())
        .select_from(Image)
        .where(_failed_under(folder_db, recursive, ranged))
    )
    skipped = session.scalar(
        sa.select(sa.func.count())
        .select_from(FileProblem)
        .where(_scanned_under(folder_db, recursive, ranged))
    )
    return int(failed or 0) + int(skipped or 0)


def folder_problems(
    session: Session,
    folder: str,
    recursive: bool = True,
    limit: int = 1000,
    after: str | None = None,
) -> list[FolderProblem]:
    """The files under ``folder`` (a filesystem path) that are not in the library now, and why:
    the entries its scans could not take and the files that could not be decoded, by path
    (code point order), the first ``limit`` after the path ``after`` (catalog text form). Each
    source is one range read in path order, stopped at ``limit``."""
    folder_db = path_to_db(os.path.abspath(folder))
    ranged = bytewise_text(session)
    as_c = not ranged and session.get_bind().dialect.name == "postgresql"

    def by_path(column: sa.SQLColumnExpression[str]) -> sa.SQLColumnExpression[str]:
        # code point order on every database (the cursor's and the merge's): where text does
        # not sort that way (PostgreSQL with a language collation), compared and sorted as C
        return sa.collate(column, "C") if as_c else column

    scanned_stmt = sa.select(FileProblem.path, FileProblem.reason, FileProblem.reported_at).where(
        _scanned_under(folder_db, recursive, ranged)
    )
    failed_stmt = sa.select(Image.path, Image.error, Image.updated_at).where(
        _failed_under(folder_db, recursive, ranged)
    )
    if after is not None:
        scanned_stmt = scanned_stmt.where(by_path(FileProblem.path) > after)
        failed_stmt = failed_stmt.where(by_path(Image.path) > after)
    scanned = session.execute(scanned_stmt.order_by(by_path(FileProblem.path)).limit(limit)).all()
    failed = session.execute(failed_stmt.order_by(by_path(Image.path)).limit(limit)).all()
    out = [FolderProblem(str(p), str(r), "scan", t) for p, r, t in scanned]
    out += [FolderProblem(str(p), str(r or "could not be read"), "decode", t) for p, r, t in failed]
    return sorted(out, key=lambda f: f.path)[:limit]
