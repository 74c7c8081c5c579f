"""The Library: the composition root the service and the CLI use (see docs/ARCHITECTURE.md).

One :class:`~indexer.context.CatalogContext` (the data folder, the catalog's sessions, the
roots files may be read from) and a service per idea over it, each typed by a Protocol in
indexer.facade:

* index and freshness: :class:`~indexer.serving.IndexService` (the served index, followed and
  hot-swapped);
* images and files: :class:`~indexer.images.ImageService`;
* removals: :class:`~indexer.removals.RemovalService` (delete, trash, restore);
* watched folders and the watcher: :class:`~indexer.folders.FolderService`;
* jobs: :class:`~indexer.job_queue.JobService` (submit, read, wait) and the embedded worker
  (:class:`~indexer.job_queue.EmbeddedWorkers`);
* stats: :class:`~indexer.stats.StatsService` (a typed :class:`~indexer.stats.LibraryStats`);
* search (below, for now) reads the served index and the catalog.

The flat methods delegate to the services so that existing callers keep working.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import catalog, safe_files
from .browse import Timeline
from .catalog import Image
from .configs import LibraryConfig, OcrConfig
from .context import CatalogContext
from .context import as_id as _as_id
from .errors import Conflict, IndexerError
from .filtering import filter_conditions, store_filters
from .folders import FolderService
from .freshness import IndexFollower
from .images import ImageService
from .ingest_problems import PROBLEMS_PAGE_DEFAULT, FolderProblemPage
from .job_queue import EmbeddedWorkers, JobService, wait_for_job
from .removals import RemovalService
from .serving import IndexService, Served
from .stats import LibraryStats, StatsService
from .timing import timed
from .types import (
    FolderInfo,
    Hit,
    ImageInfo,
    JobInfo,
    RemovedInfo,
    RestoreResult,
    SearchFilters,
    Tally,
    check_page,
)
from .vector_store import StoreFilters, selective_ids

if TYPE_CHECKING:
    from celery import Celery

    from clipsearch.model.base import EmbeddingModel

    from .catalog.rows import HitRow
    from .configs import WorkerOverrides
    from .hybrid import Sources
    from .keywords import ImageText, KeywordHit
    from .relevance import BackgroundCache, Calibration
    from .watch import FolderWatcher
    from .worker import WorkerProcess

log = logging.getLogger(__name__)

MAX_K = 10_609  # a page as deep as indexer.search_service allows (10,000 + 500 + 109)
MAX_RANKING = 16_000  # (id, cosine) pairs a hybrid ranking may read (indexer.hybrid)
CALIBRATION_FILE = "relevance.json"  # the last relevance calibration (indexer.relevance)


#: How long Library.has_keywords trusts having seen keyword rows (seconds).
KEYWORDS_YES_S = 60.0


class Library:
    """The composition root: one catalog context and the services over it (thread-safe).

    Each idea is a service with its own Protocol (indexer.facade): ``index`` (index and
    freshness), ``images`` (images and files), ``removals``, ``folders`` (watched folders and the
    watcher), ``jobs``, ``statistics``, ``workers`` (the embedded worker). The methods below
    delegate to them, so callers of the flat surface keep working."""

    def __init__(self, config: LibraryConfig) -> None:
        self.config = config
        self.ctx = CatalogContext.open(
            config.resolved_data_dir,
            config.resolved_database_url,
            config.allowed_roots,
            migrate=config.auto_migrate,
        )
        self.data_dir = self.ctx.data_dir
        self.database_url = config.resolved_database_url
        self.engine = self.ctx.engine
        self.Session = self.ctx.Session
        self.index = IndexService(
            self.ctx,
            config.model_spec,
            config.device,
            config.store,
            config.refresh_interval_s,
            image_tower=config.image_tower,
        )
        self.jobs = JobService(
            self.ctx, config.resolved_broker_url, config.queue_prefix, config.broker_url
        )
        self.images = ImageService(self.ctx, self.index)
        self.removals = RemovalService(self.ctx, self.images, self.index, self.jobs)
        self.folders = FolderService(self.ctx, self.jobs)
        self.statistics = StatsService(self.ctx, self.index)
        self.workers = EmbeddedWorkers()
        self._relevance: BackgroundCache | None = None  # made on first use
        self._relevance_size: tuple[float, int] = (0.0, 0)  # (checked at, library size)
        self._keywords_seen: float | None = None  # when the keyword index last had rows

    # ---- plumbing

    def _session(self) -> contextlib.AbstractContextManager[Session]:
        return self.ctx.session()

    @property
    def ocr_config(self) -> OcrConfig:
        """How this library's images get their text read (indexer.ocr)."""
        return self.config.ocr

    def close(self) -> None:
        """Stop workers and the watcher this library started and release connections."""
        self.index.follower.stop()
        self.folders.stop_watcher()
        self.workers.stop_all()
        self.jobs.close()
        self.index.close()
        self.ctx.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model and index (indexer.serving)

    @property
    def model(self) -> EmbeddingModel:
        """The CLIP model searches use (the active index's model), loaded on first use."""
        return self.index.model

    @property
    def model_spec(self) -> str:
        return self.index.model_spec

    @property
    def _served(self) -> Served | None:
        return self.index.served

    @property
    def _follower(self) -> IndexFollower:
        return self.index.follower

    def _ensure_served(self) -> Served:
        return self.index.ensure_served()

    def refresh_index(self) -> int:
        """Pick up a newer active index version (hot swap) and what the catalog changed since the
        build (new vectors, deletions). Returns the catalog rows the refresh read."""
        return self.index.refresh_index()

    # ---- search

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
        exclude: Sequence[int] | None = None,
    ) -> list[Hit]:
        """The ``k`` best ready images for ``vector`` after skipping ``offset``, best first."""
        read = functools.partial(self._hit_rows, filters=filters)
        found = self._search(vector, k, offset, min_score, filters, exclude, read, rows=True)
        return found  # type: ignore[return-value]

    def search_scores(
        self,
        vector: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        read: Callable[[list[int]], Mapping[int, object]] | None = None,
    ) -> list[tuple[int, float]]:
        """(id, cosine) of the ``k`` best ready images for ``vector``, best first: what
        :meth:`search` finds, without reading the rows a page would show (a hybrid query ranks
        100 or more of them and shows 20). ``read``: the catalog's check of the ids the vector
        search found: given those it was not given before, it returns the rows of the ones that
        are ready and pass the filters (by id; default: their ids alone). A ranking hands one
        that reads everything it needs of those images in the same statement (indexer.hybrid)."""
        check = read if read is not None else functools.partial(self._ready_ids, filters=filters)
        found = self._search(vector, k, 0, None, filters, None, check)
        return found  # type: ignore[return-value]

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        offset: int,
        min_score: float | None,
        filters: SearchFilters | None,
        exclude: Sequence[int] | None,
        read: Callable[[list[int]], Mapping[int, Any]],
        rows: bool = False,
    ) -> list[Hit] | list[tuple[int, float]]:
        # a ranking without rows (hybrid) may read as deep as indexer.hybrid.MAX_DEPTH
        k, offset = check_page(k, offset, MAX_K if rows else MAX_RANKING)
        served = self._ensure_served()
        self._follower.due()  # the follower refreshes soon; this search reads what is served now
        served = self._served or served
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        store = served.store
        if q.size != store.dim:
            raise Conflict(
                f"the query vector has {q.size} dimensions but the served model "
                f"({served.spec}) makes {store.dim}; the active model may have just "
                "changed: embed the query again with Library.model and retry"
            )
        if not np.all(np.isfinite(q)) or float(np.linalg.norm(q)) < 1e-6:
            raise IndexerError("the query vector is zero or not finite; nothing to search by")
        need = offset + k
        if need > store.max_fetch:
            raise IndexerError(
                f"offset + k is at most {store.max_fetch} with the {store.kind} store; narrow the "
                "search with filters instead of paging this deep"
            )
        inside = store.filters_inside and filters is not None
        store_filters = self._store_filters(filters) if inside and filters is not None else None
        total = store.count() if not store.filters_inside else store.max_fetch
        allow = None  # a selective folder filter: its ids, searched through a FAISS id selector
        if filters is not None and not store.filters_inside:
            with self._session() as session:
                allow = selective_ids(session, self._store_filters(filters))
            if allow is not None:
                total = min(total, int(allow.size))
        # a margin for ids the catalog no longer shows (asked again, 4x deeper, if it was short);
        # a page of rows doubles it, a ranking without rows (hybrid, 100 deep) adds a quarter
        margin = need if rows else need // 4
        fetch = min(max(need + margin, 32), max(total, 1), store.max_fetch)
        found: dict[int, Any] = {}  # the catalog's rows of the ids read so far (ready, filtered)
        asked: set[int] = set()
        while True:
            with timed("vector_search"):
                scores, ids = store.search(
                    q, fetch, filters=store_filters, exclude=exclude, allow=allow
                )
            valid = ids >= 0
            ids_l = [int(i) for i in ids[valid]]
            scores_l = [float(s) for s in scores[valid]]
            # The catalog has the last word (state and filters by primary key): an id the store
            # still holds after a delete it missed is never shown. One read of the ids found (a
            # deeper search reads only those it adds).
            new = [i for i in ids_l if i not in asked]
            if new:
                with timed("catalog"):
                    found.update(read(new))
                asked.update(new)
            hits: list[Any] = []
            below = False
            for image_id, score in zip(ids_l, scores_l, strict=True):
                if min_score is not None and score < min_score:
                    below = True
                    break
                if image_id not in found:
                    continue
                if rows:
                    hits.append(catalog.hit_from_row(found[image_id], score))
                else:
                    hits.append((image_id, score))
            exhausted = len(ids_l) < fetch or fetch >= total
            if len(hits) >= need or below or exhausted:
                return hits[offset:need]
            fetch = min(fetch * 4, total, store.max_fetch)

    def has_keywords(self) -> bool:
        """Whether the keyword index has rows (then text queries default to hybrid). Asked by
        every text query without a mode, so a yes is kept for a minute instead of probing the
        catalog each time (rows go only when the library empties; hybrid ranking over an empty
        keyword index is the vector search); a no is looked at again on the next query, so the
        first images of a new library are searched by their words at once."""
        from .keywords import has_content

        now = time.monotonic()
        seen = self._keywords_seen
        if seen is not None and now - seen < KEYWORDS_YES_S:
            return True
        with self._session() as session:
            found = bool(has_content(session))
        self._keywords_seen = now if found else None
        return found

    def keywords_known(self) -> bool:
        """Whether :meth:`has_keywords` said yes within the last minute (no catalog read: the
        API asks it on the event loop before handing a query to a thread)."""
        seen = self._keywords_seen
        return seen is not None and time.monotonic() - seen < KEYWORDS_YES_S

    def search_text(
        self,
        vector: np.ndarray | None,
        query: str,
        mode: str | None = None,
        k: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
        keywords: tuple[int, list[KeywordHit]] | None = None,
        relevance: Callable[[Sequence[float]], Sequence[float]] | None = None,
        min_relevance: float | None = None,
        tally: Tally | None = None,
    ) -> list[Hit]:
        """A text query through the vectors and/or the keyword index (``mode`` semantic, text,
        hybrid; None: hybrid when the keyword index has content); see :mod:`indexer.hybrid`.
        ``keywords``: what :meth:`keyword_hits` gave for this query, filters and depth;
        ``relevance``: the calibrated relevance of cosines; ``min_relevance``: the cut on the
        relevance each hit shows (indexer.search_service); ``tally``: filled with what it read
        below the cut (hybrid.search_text)."""
        from .hybrid import search_text

        return search_text(
            self._sources(),
            vector,
            query,
            mode,
            k,
            offset,
            min_score,
            filters,
            keywords,
            relevance=relevance,
            min_relevance=min_relevance,
            tally=tally,
        )

    def keyword_hits(
        self, query: str, k: int = 20, offset: int = 0, filters: SearchFilters | None = None
    ) -> tuple[int, list[KeywordHit]]:
        """(depth, hits): the keyword side of a hybrid or text query for a page, read on its
        own (no vector needed), to hand to :meth:`search_text` as ``keywords``."""
        from .hybrid import keyword_depth, keyword_hits

        depth = keyword_depth(k, offset)
        return depth, keyword_hits(self._sources(), query, depth, filters)

    def _sources(self) -> Sources:
        from .hybrid import Sources

        return Sources(
            session=self._session,
            conditions=self._filter_conditions,
            model_id=lambda: self._ensure_served().model_id,
            rows=self._hit_rows,
            search=self.search,
            scores=self.search_scores,
            has_keywords=self.has_keywords,
        )

    def image_text(self, image_id: int) -> ImageText:
        """The words read in and beside an image (OCR text, caption, OCR state)."""
        from .keywords import image_text

        image_id = _as_id(image_id)
        with self._session() as session:
            catalog.get_image(session, image_id)
            return image_text(session, image_id) or {}

    def submit_ocr(self, force: bool = False, folder: str | None = None) -> JobInfo:
        """Queue a job reading the text inside the library's images (those never read, or
        with ``force`` all; ``folder``: only under it) without re-embedding anything."""
        from .celery_app import TASK_OCR
        from .ocr_job import ocr_params

        job = self._record_job("ocr", ocr_params(force, folder))
        self._send(TASK_OCR, job.id)
        return job

    def calibration(self) -> Calibration:
        """The relevance calibration of the served index (:mod:`indexer.relevance`): measured
        with the background queries on first use, again when the library's size has changed by
        a quarter (checked at most once a minute) or after an hour, or with a new index."""
        from .relevance import BackgroundCache

        served = self._ensure_served()
        served = self._served or served
        if self._relevance is None:
            # kept in the data folder for the library's other processes (`clipsearch search`)
            self._relevance = BackgroundCache(store=self.data_dir / CALIBRATION_FILE)
        checked_at, size = self._relevance_size
        now = time.monotonic()
        if now - checked_at > 60.0 or size == 0:
            size = int(served.store.count())
            self._relevance_size = (now, size)

        def best(vectors: np.ndarray) -> list[float]:
            out = []
            for vector in vectors:
                hits = self.search(vector, k=1)
                out.append(hits[0].score if hits else float("nan"))
            return out

        identity = f"{served.spec}@{served.catalog_version}"  # the model, the index version
        return self._relevance.get(id(served), served.model, best, size, identity)

    def _store_filters(self, filters: SearchFilters) -> StoreFilters:
        return store_filters(filters)  # indexer.filtering: the one reading of the filters

    def _hit_rows(self, ids: list[int], filters: SearchFilters | None) -> dict[int, HitRow]:
        """The ready rows of these ids that pass the filters, by id: only the columns a hit
        shows (plain rows, not ORM objects: a search reads up to hundreds per query)."""
        if not ids:
            return {}
        stmt = sa.select(*catalog.HIT_COLUMNS).where(catalog.ID_IN, Image.state == "ready")
        if filters is not None:
            stmt = stmt.where(*self._filter_conditions(filters))
        with self._session() as session:
            return {row.id: row for row in session.execute(stmt, {"ids": ids})}

    def _ready_ids(self, ids: list[int], filters: SearchFilters | None) -> dict[int, int]:
        """Which of these ids are ready images that pass the filters (by primary key), each
        mapped to itself."""
        if not ids:
            return {}
        stmt = sa.select(Image.id).where(catalog.ID_IN, Image.state == "ready")
        if filters is not None:
            stmt = stmt.where(*self._filter_conditions(filters))
        with self._session() as session:
            return {int(i): int(i) for i in session.scalars(stmt, {"ids": ids})}

    def _filter_conditions(self, filters: SearchFilters) -> list[sa.ColumnElement[bool]]:
        return filter_conditions(filters)  # the same conditions browse_images applies

    # ---- images and files (indexer.images)

    def get_image(self, image_id: int) -> ImageInfo:
        return self.images.get_image(image_id)

    def list_images(
        self,
        offset: int = 0,
        limit: int = 50,
        state: str | None = None,
        after: int | None = None,
    ) -> tuple[list[ImageInfo], int]:
        """See :meth:`indexer.images.ImageService.list_images`."""
        return self.images.list_images(offset, limit, state, after)

    def browse_images(
        self,
        limit: int = 50,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "id",
        after: int | None = None,
        after_key: str | None = None,
    ) -> tuple[list[ImageInfo], int, int | None, str | None]:
        """See :meth:`indexer.images.ImageService.browse_images`."""
        return self.images.browse_images(limit, state, filters, sort, after, after_key)

    def timeline(
        self,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "date_desc",
        limit: int = 1200,
    ) -> Timeline:
        """See :meth:`indexer.images.ImageService.timeline`."""
        return self.images.timeline(state, filters, sort, limit)

    def image_vector(self, image_id: int) -> np.ndarray:
        return self.images.image_vector(image_id)

    def thumbnail_path(self, image_id: int) -> Path:
        return self.images.thumbnail_path(image_id)

    def open_thumbnail(self, image_id: int) -> safe_files.OpenedFile:
        return self.images.open_thumbnail(image_id)

    @property
    def thumbnails_dir(self) -> Path:
        return self.ctx.thumbnails_dir

    def file_path(self, image_id: int) -> Path:
        return self.images.file_path(image_id)

    def serving_roots(self, refresh: bool = False) -> list[str]:
        return self.images.serving_roots(refresh)

    def open_file(self, image_id: int) -> tuple[safe_files.OpenedFile, str | None]:
        """See :meth:`indexer.images.ImageService.open_file`."""
        return self.images.open_file(image_id)

    def delete_image(self, image_id: int, from_disk: bool = False) -> RemovedInfo:
        """See :meth:`indexer.removals.RemovalService.delete_image`."""
        return self.removals.delete_image(image_id, from_disk)

    @property
    def trash_dir(self) -> Path:
        return self.ctx.trash_dir

    def list_removed(
        self, limit: int = 50, before: int | None = None, within: tuple[str, ...] | None = None
    ) -> list[RemovedInfo]:
        return self.removals.list_removed(limit, before, within)

    def get_removed(self, removed_id: int) -> RemovedInfo:
        return self.removals.get_removed(removed_id)

    def restore_image(self, image_id: int) -> RestoreResult:
        return self.removals.restore_image(image_id)

    def restore(self, removed_id: int) -> RestoreResult:
        """See :meth:`indexer.removals.RemovalService.restore`."""
        return self.removals.restore(removed_id)

    def open_removed_thumbnail(self, removed_id: int) -> safe_files.OpenedFile:
        return self.removals.open_removed_thumbnail(removed_id)

    # ---- watched folders and the watcher (indexer.folders)

    def add_watched_folder(
        self, path: str, recursive: bool = True, if_changed: bool = False
    ) -> FolderInfo:
        """See :meth:`indexer.folders.FolderService.add_watched_folder`."""
        return self.folders.add_watched_folder(path, recursive, if_changed)

    def remove_watched_folder(self, folder_id: int) -> FolderInfo:
        return self.folders.remove_watched_folder(folder_id)

    def scan_watched_folder(
        self, folder_id: int, sub_path: str | None = None, if_changed: bool = False
    ) -> JobInfo | None:
        """See :meth:`indexer.folders.FolderService.scan_watched_folder`."""
        return self.folders.scan_watched_folder(folder_id, sub_path, if_changed)

    def get_watched_folder(self, folder_id: int) -> FolderInfo:
        return self.folders.get_watched_folder(folder_id)

    def list_watched_folders(self) -> list[FolderInfo]:
        return self.folders.list_watched_folders()

    def watched_folder_problems(
        self, folder_id: int, limit: int = PROBLEMS_PAGE_DEFAULT, after: str | None = None
    ) -> FolderProblemPage:
        """See :meth:`indexer.folders.FolderService.watched_folder_problems`."""
        return self.folders.watched_folder_problems(folder_id, limit, after)

    @property
    def watcher(self) -> FolderWatcher | None:
        """The running :class:`~indexer.watch.FolderWatcher`, if :meth:`start_watcher` ran."""
        return self.folders.watcher

    @watcher.setter
    def watcher(self, watcher: FolderWatcher | None) -> None:
        self.folders.watcher = watcher

    def start_watcher(
        self, rescan_interval_s: float = 3600.0, debounce_s: float = 2.0
    ) -> FolderWatcher:
        """Watch the catalog's watched folders in this process (stopped by :meth:`close`)."""
        return self.folders.start_watcher(rescan_interval_s, debounce_s)

    # ---- jobs (indexer.job_queue)

    @property
    def celery(self) -> Celery:
        return self.jobs.celery

    def send_job(self, task: str, job_id: int) -> None:
        """Queue the task of a job recorded by a domain module (albums, tags, duplicates)."""
        self.jobs.send(task, job_id)

    _send = send_job  # the older name

    def _record_job(self, kind: str, params: dict[str, object]) -> JobInfo:
        return self.jobs.record(kind, params)

    def check_ingest_path(self, path: str | os.PathLike[str]) -> Path:
        """See :meth:`indexer.job_queue.JobService.check_ingest_path`."""
        return self.jobs.check_ingest_path(path)

    def submit_ingest(self, path: str, recursive: bool = True) -> JobInfo:
        """Record an ingest job for a folder and queue it. Returns the queued job."""
        return self.jobs.submit_ingest(path, recursive)

    def submit_reindex(self, model_spec: str | None = None) -> JobInfo:
        """Record a re-index job (optionally switching to ``model_spec``) and queue it."""
        return self.jobs.submit_reindex(model_spec)

    def get_job(self, job_id: int) -> JobInfo:
        return self.jobs.get_job(job_id)

    def list_jobs(self, limit: int = 50, before: int | None = None) -> list[JobInfo]:
        return self.jobs.list_jobs(limit, before)

    def wait_for_job(
        self,
        job_id: int,
        timeout: float | None = None,
        on_progress: Callable[[JobInfo], None] | None = None,
        poll_s: float = 0.5,
    ) -> JobInfo:
        """See :func:`indexer.job_queue.wait_for_job`."""
        return wait_for_job(self.jobs, job_id, timeout, on_progress, poll_s)

    def start_embedded_worker(self, **overrides: Unpack[WorkerOverrides]) -> WorkerProcess:
        """Start a worker child process on this library's broker (stopped by :meth:`close`, and
        on Linux when this process dies). Returns its :class:`~indexer.worker.WorkerProcess`."""
        return self.workers.start(self.config.worker_config(**overrides))

    # ---- stats (indexer.stats)

    def stats(self) -> LibraryStats:
        """Counts by state, the served index, unfinished jobs. Cheap: loads no model."""
        return self.statistics.stats()


if TYPE_CHECKING:  # the service's view of a library (indexer.facade) is this class's
    from .facade import LibraryFacade

    _library_is_a_facade: type[LibraryFacade] = Library
