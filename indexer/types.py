"""Plain dataclasses the indexer hands to its callers (service, CLI, Celery tasks).

They carry no database session: every value is copied out of the ORM rows, so they can cross
threads, processes and the HTTP edge freely.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import IndexerError

IMAGE_STATES = ("pending", "ready", "failed")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
AlbumKind = Literal["manual", "smart"]  # hand-picked, or a saved query's (indexer.albums)


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    score: float
    path: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: dt.datetime | None = None
    # why it matched (indexer.hybrid): "semantic", and/or the keyword fields "text" (OCR),
    # "filename", "caption", "folder"; the image's words that matched the query
    match: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    # the ranking key the hit shows (indexer.search_service): calibrated, 0..1; None uncalibrated
    relevance: float | None = None


@dataclass(frozen=True)
class ImageInfo:
    """One catalogued file. ``path`` is the catalog's text form (see ``catalog.path_to_db``)."""

    id: int
    path: str
    folder: str
    size: int
    mtime: float  # seconds since the epoch
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: dt.datetime | None  # EXIF DateTimeOriginal, camera-local wall-clock time
    state: str  # pending | ready | failed
    error: str | None
    thumbnail: str | None  # key relative to the thumbnail folder, e.g. "ab/abcdef....jpg"
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True)
class FolderInfo:
    """A watched folder and how it is doing. ``state``: ``watching`` (events are followed by a
    running watcher), ``scanning`` (its newest job is queued or running), ``missing`` (the folder
    is not there: an unmounted drive), ``idle`` (no watcher runs: only explicit ingests and
    periodic re-scans of a serving process pick up changes)."""

    id: int
    path: str  # catalog text form
    recursive: bool
    state: str
    created_at: dt.datetime | None = None
    last_scan_at: dt.datetime | None = None
    last_job: JobInfo | None = None


@dataclass(frozen=True)
class RemovedInfo:
    """A file the user removed from the library: scans do not add it again (by path, or by
    content anywhere) until it is restored. ``image_id`` is the id it had; a restore gives the
    file a new one (ids are never reused)."""

    id: int
    image_id: int
    path: str  # catalog text form, as ImageInfo.path
    folder: str
    size: int
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: dt.datetime | None
    thumbnail: str | None
    trash_path: str | None  # where the file was moved when removed from disk too (else None)
    removed_at: dt.datetime | None = None


@dataclass(frozen=True)
class RestoreResult:
    """What a restore brought back (every removal of the same content) and the ingest jobs that
    add the files again."""

    restored: list[RemovedInfo]
    jobs: list[JobInfo]


@dataclass(frozen=True)
class JobInfo:
    """A job's progress as recorded in the catalog."""

    id: int
    kind: str  # ingest | reindex | delete | duplicates
    state: str  # queued | running | done | failed | cancelled
    params: dict[str, Any]
    total: int | None  # None until the job has been planned
    done: int
    failed: int
    errors: list[dict[str, str]]  # a capped sample: [{"path": ..., "reason": ...}]
    message: str | None = None  # why the job failed as a whole (model, folder, database)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied to search hits. ``folder`` matches that folder and everything below."""

    folder: str | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    formats: tuple[str, ...] | None = None  # Pillow format names: "JPEG", "PNG", ...
    tag: str | None = None  # only pictures with this tag (its name or id; indexer.tags)
    # only pictures under these folders (catalog text form): the folders shared with a viewer
    # (indexer.sharing); None: no such restriction, () : nothing
    within: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tag is not None and (
            not 0 < len(self.tag) <= 64 or control_character(self.tag) is not None
        ):
            raise IndexerError("the tag filter is a tag's name or id (1 to 64 characters)")
        # checked before any store sees them: a control character or NUL is no folder or format
        # a catalog holds, and a store's filter expression must never be built from one
        if self.folder is not None:
            bad = control_character(self.folder)
            if bad is not None:
                raise IndexerError(f"the folder filter contains a control character ({bad})")
        for name in self.formats or ():
            if not (0 < len(name) <= 16 and name.replace("-", "").replace("_", "").isalnum()):
                raise IndexerError(
                    f"the format filter {name[:20]!r} is not a format name (JPEG, PNG, WEBP, "
                    "GIF, BMP, TIFF, ...)"
                )


def control_character(text: str) -> str | None:
    """The first control character (C0, DEL or C1; NUL included) in ``text`` as ``U+XXXX``,
    or None when there is none."""
    for ch in text:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            return f"U+{ord(ch):04X}"
    return None


@dataclass
class Tally:
    """A text or hybrid ranking's count of its results below the relevance cut
    (indexer.hybrid.search_text): its first step reads ``want`` results deeper than the page,
    then it fills in how many of those it read fall below the cut (``below``) and whether it
    read every result (``whole``). The page where the results above the cut end counts what the
    cut hid from it so (indexer.search_service), without ranking again where it can."""

    want: int = 0
    below: int = 0
    whole: bool = False


@dataclass(frozen=True)
class FileInfo:
    """A file the scanner recognised as an image. ``path`` is a filesystem ``str`` (may hold
    surrogate escapes for non-UTF-8 names; use it with ``open``/``os.stat`` as is)."""

    path: str
    size: int
    mtime_ns: int
    kind: str  # "jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif"

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


@dataclass(frozen=True)
class ScanProblem:
    """An entry the scanner could not read (reported, never fatal)."""

    path: str
    reason: str


@dataclass
class IngestPlan:
    """What ``ingest.plan_ingest`` found and decided for one job."""

    job_id: int
    root: str
    batches: list[list[int]] = field(default_factory=list)  # image ids to hand to process_batch
    new_ids: list[int] = field(default_factory=list)
    changed_ids: list[int] = field(default_factory=list)  # content changed: drop old vectors
    moved_ids: list[int] = field(default_factory=list)  # same content, new path: vector kept
    removed_ids: list[int] = field(default_factory=list)  # file gone: drop from the index
    unchanged: int = 0
    skipped_removed: int = 0  # new files the user removed (by path or content): not added
    problems: list[ScanProblem] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass
class BatchResult:
    """What ``ingest.process_batch`` committed."""

    done: int = 0
    failed: int = 0
    skipped: int = 0  # already processed (a re-run) or gone since planning
    embedded: int = 0  # vectors computed by the model (duplicates of known content cost none)
    ready_ids: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    job_finished: bool = False
    ocr: dict[str, int] = field(default_factory=dict)  # images by OCR outcome (done, failed, ...)


#: The deepest a search or listing may page with ``offset`` (a larger one is refused).
MAX_OFFSET = 100_000


def check_page(k: object, offset: object, maximum: int) -> tuple[int, int]:
    """``(k, offset)`` as ints once checked: 1 <= k <= ``maximum``, 0 <= offset <= MAX_OFFSET;
    anything else raises an :class:`IndexerError` that says what is allowed."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= maximum:
        raise IndexerError(f"the page size must be an integer from 1 to {maximum}, got {k!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise IndexerError(f"offset must be a non-negative integer, got {offset!r}")
    if offset > MAX_OFFSET:
        raise IndexerError(f"offset is too large (at most {MAX_OFFSET}); narrow the search instead")
    return int(k), int(offset)
