"""The Library: the one facade the service and the CLI use (see docs/ARCHITECTURE.md).

It reads the catalog, serves searches from the vector index, and submits jobs to the workers:

* **Index lifecycle.** The catalog's active ``IndexVersion`` names the model searches use and the
  saved index (``<data_dir>/index``, :class:`~indexer.vector_index.IndexStore`). The Library loads
  it, then keeps it fresh: images embedded since that build are added to the index's exact delta
  (by one follower thread, indexer.freshness: every ``refresh_interval_s`` and soon after a
  search finds it due; or at once with :meth:`refresh_index`),
  so newly ingested images are searchable before any rebuild. A newer active version (a re-index
  finished, possibly with a new model) is loaded beside the old one and swapped in by one
  reference assignment: a query in flight finishes on what it started with. Without any index yet,
  or when its files were deleted, the Library serves an exact index made from the catalog's
  vectors: the catalog is the source of truth, the FAISS files are a derived cache.
* **Jobs.** ``submit_*`` records the Job row first, then sends the task: if the broker loses the
  message, the next worker to start re-enqueues the job from the catalog.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from . import catalog, safe_files
from .catalog import Image, IndexVersion, Job, ModelRecord
from .celery_app import TASK_INGEST, TASK_REINDEX, default_broker_url, make_celery
from .context import index_dir, library_model_spec, normalise_spec
from .errors import (
    Conflict,
    IndexerError,
    IngestError,
    NotFound,
    PathNotAllowed,
    QueueUnavailable,
    StoreUnavailable,
)
from .freshness import IndexFollower
from .jobs import FINAL_STATES
from .ocr import OcrConfig
from .settings import DEFAULT_MODEL
from .types import (
    IMAGE_STATES,
    FolderInfo,
    Hit,
    ImageInfo,
    JobInfo,
    RemovedInfo,
    RestoreResult,
    SearchFilters,
    check_page,
)
from .vector_store import (
    LEASE_TTL_S,
    FaissStore,
    StoreConfig,
    StoreFilters,
    VectorStore,
    active_index_row,
    follow_catalog,
    hold_lease,
    new_lease_owner,
    release_lease,
    selective_ids,
)

log = logging.getLogger(__name__)

MAX_K = 10_609  # a page as deep as indexer.search_service allows (10,000 + 500 + 109)
MAX_RANKING = 16_000  # (id, cosine) pairs a hybrid ranking may read (indexer.hybrid)
_MAX_ROW_ID = 2**31 - 1  # ids are 32-bit integers in the catalog
MAX_LIST = 1000
WATCH_HEARTBEAT_S = 10.0  # how often a watcher marks its folders watched in the catalog
RESCAN_MTIME = -1  # an image's catalog mtime once serving found its file changed: re-scan it

__all__ = ["Library", "LibraryConfig", "wait_for_job"]


def _masked(url: str | None) -> str | None:
    """A broker or database URL as it may be logged: its password replaced by ``**``."""
    if not url:
        return url
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


#: How long Library.has_keywords trusts having seen keyword rows (seconds).
KEYWORDS_YES_S = 60.0


@dataclass(frozen=True)
class LibraryConfig:
    """How to reach a library. Only ``data_dir`` is required; the rest default to embedded."""

    data_dir: Path  # thumbnails, index files, the embedded catalog and broker
    database_url: str | None = None  # None: SQLite at <data_dir>/catalog.db
    broker_url: str | None = None  # None: the embedded SQLite broker at <data_dir>/broker.sqlite
    model_spec: str = DEFAULT_MODEL  # the model of a new library (the catalog's model wins)
    device: str | None = None  # None: CUDA when available, else CPU
    queue_prefix: str = ""  # namespaces the queue on a shared broker
    allowed_roots: Sequence[Path] | None = None  # folders ingest may read; None: any folder
    refresh_interval_s: float = (
        2.0  # how often the index follows the catalog (new vectors, versions)
    )
    batch_size: int = 32  # images per embedding batch (workers started by this library)
    worker_concurrency: int = 1
    extra_worker_env: dict[str, str] = field(default_factory=dict)
    store: StoreConfig = field(default_factory=StoreConfig)  # FAISS files, or Milvus
    ocr: OcrConfig = field(default_factory=OcrConfig)  # text inside images (indexer.ocr)

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or catalog.default_database_url(self.resolved_data_dir)

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or default_broker_url(self.resolved_data_dir)

    def worker_config(self, **overrides: Any) -> Any:
        """The :class:`~indexer.worker.WorkerConfig` for a worker serving this library."""
        from .worker import WorkerConfig

        values: dict[str, Any] = {
            "data_dir": self.resolved_data_dir,
            "model_spec": self.model_spec,
            "database_url": self.resolved_database_url,
            "broker_url": self.resolved_broker_url,
            "queue_prefix": self.queue_prefix,
            "device": self.device,
            "concurrency": self.worker_concurrency,
            "batch_size": self.batch_size,
            "extra_env": dict(self.extra_worker_env),
            "store": self.store,
            "ocr": self.ocr,
        }
        values.update(overrides)
        return WorkerConfig(**values)


@dataclass
class _Served:
    """What searches read: one model with one vector store. Replaced whole on a version change."""

    model: Any
    model_id: int
    spec: str
    store: VectorStore
    catalog_version: int | None  # the active IndexVersion it came from (None: built in memory)
    watermark: int  # the catalog's change sequence this store reflects (catalog.changes_since)
    lock: threading.Lock = field(default_factory=threading.Lock)
    mark: str | None = None  # Milvus: the catalog mark that keeps the collection's watermark

    @property
    def index(self) -> Any:
        """The in-process VectorIndex (FAISS store only; None with Milvus)."""
        return getattr(self.store, "index", None)


def wait_for_job(
    library: Library,
    job_id: int,
    timeout: float | None = None,
    on_progress: Callable[[JobInfo], None] | None = None,
    poll_s: float = 0.5,
) -> JobInfo:
    """Poll a job until it is done, failed or cancelled; ``on_progress`` sees every change.

    Raises :class:`IndexerError` when ``timeout`` seconds pass first (the job keeps running).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    while True:
        job = library.get_job(job_id)
        key = (job.state, job.total, job.done, job.failed)
        if on_progress is not None and key != last:
            on_progress(job)
        last = key
        if job.state in FINAL_STATES:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise IndexerError(
                f"job {job_id} is still {job.state} after {timeout:.0f} s ({job.done} of "
                f"{job.total if job.total is not None else '?'} done); it keeps running: check it "
                "with `clipsearch status`, and that a worker is running"
            )
        time.sleep(poll_s)


class Library:
    """The facade over catalog, index, model and jobs (thread-safe)."""

    def __init__(self, config: LibraryConfig) -> None:
        self.config = config
        self.data_dir = config.resolved_data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = config.resolved_database_url
        self.engine = catalog.init_db(self.database_url)
        self.Session = catalog.session_factory(self.engine)
        self._celery: Any = None
        self._served: _Served | None = None
        self._index_damage: str | None = None  # why the index files are not served
        self._load_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        # freshness: one thread (started with the first index served) follows the catalog
        self._follower = IndexFollower(self.refresh_index, config.refresh_interval_s)
        # Milvus: of the processes following the catalog, only the lease holder writes the
        # repairs (vector_store.hold_lease); workers write their own batches.
        self._lease_owner = new_lease_owner()
        self._lease_ttl_s = max(LEASE_TTL_S, 5 * config.refresh_interval_s)
        self._workers: list[Any] = []
        self.watcher: Any = None  # a running indexer.watch.FolderWatcher (set by start_watcher)
        self._ingest_roots: tuple[float, list[str]] | None = None
        self._relevance: Any = None  # indexer.relevance.BackgroundCache, made on first use
        self._relevance_size: tuple[float, int] = (0.0, 0)  # (checked at, library size)
        self._keywords_seen: float | None = None  # when the keyword index last had rows
        self._roots = (
            None
            if config.allowed_roots is None
            else [Path(r).expanduser().resolve() for r in config.allowed_roots]
        )

    # ---- plumbing

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        with self.Session() as session:
            yield session

    @property
    def celery(self) -> Any:
        if self._celery is None:
            self._celery = make_celery(
                self.config.resolved_broker_url, queue_prefix=self.config.queue_prefix
            )
        return self._celery

    def close(self) -> None:
        """Stop workers and the watcher this library started and release connections."""
        self._follower.stop()
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                self.watcher.stop()
            self.watcher = None
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.stop()
        self._workers.clear()
        if self._celery is not None:
            with contextlib.suppress(Exception):
                self._celery.close()
        served = self._served
        if served is not None and served.mark is not None:
            with contextlib.suppress(Exception), self._session() as session:
                release_lease(session, _lease_name(served.mark), self._lease_owner)
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model and index

    @property
    def model(self) -> Any:
        """The CLIP model searches use (the active index's model), loaded on first use."""
        return self._ensure_served().model

    @property
    def model_spec(self) -> str:
        served = self._served
        if served is not None:
            return served.spec
        with self._session() as session:
            return _spec_of_active(session) or normalise_spec(self.config.model_spec)

    def _load_model(self, spec: str) -> Any:
        from clipsearch import model as clip_model

        return clip_model.load(spec, device=self.config.device)

    def _ensure_served(self) -> _Served:
        served = self._served
        if served is not None:
            return served
        with self._load_lock:
            if self._served is None:
                self._served = self._load_served(reuse=None)
                self._follower.start()
            return self._served

    def _load_served(self, reuse: _Served | None) -> _Served:
        """Build what searches read from the catalog's active version (outside any lock)."""
        with self._session() as session:
            row = active_index_row(session)
            if self._milvus and (row is None or not _is_milvus(row.params)):
                row = None  # Milvus serves only Milvus versions (created below when none yet)
            elif not self._milvus and row is not None and _is_milvus(row.params):
                row = _newest_faiss_row(session)
            spec = _spec_of_row(session, row) if row is not None else None
            if spec is None:  # no index yet: the model that embedded the library, if any
                spec = library_model_spec(session)
            row_info = (
                None
                if row is None
                else (row.version, row.model_id, dict(row.params or {}), row.path)
            )
        if spec is None:
            spec = normalise_spec(self.config.model_spec)
        model = reuse.model if reuse is not None and reuse.spec == spec else self._load_model(spec)
        if self._milvus:
            served = self._load_milvus(model, spec, row_info)
        elif row_info is None:
            model_id = catalog.ensure_model(self.Session, model)
            store = FaissStore.empty(int(model.embed_dim))
            served = _Served(model, model_id, spec, store, None, 0)
        else:
            version, model_id, params, _path = row_info
            loaded = self._load_index_files(version, params)
            if loaded is None:
                store = FaissStore.empty(int(model.embed_dim))
                served = _Served(model, model_id, spec, store, version, 0)
            else:
                if "change_seq" not in params:
                    log.warning(
                        "index version %s predates the catalog's change sequence: every vector is "
                        "re-read into its delta; run `clipsearch reindex` to rebuild it",
                        version,
                    )
                watermark = int(params.get("change_seq") or 0)
                served = _Served(model, model_id, spec, loaded, version, watermark)
        self._sync_delta(served)
        return served

    @property
    def _milvus(self) -> bool:
        return self.config.store.kind == "milvus"

    def _load_milvus(
        self, model: Any, spec: str, row_info: tuple[int, int, dict[str, Any], str] | None
    ) -> _Served:
        """The Milvus collection of the active version (a client, no vectors in this process);
        a new library's first collection is created empty."""
        from . import milvus_store

        if row_info is None:
            with self._session() as session:
                other = active_index_row(session)
                if other is not None:
                    raise StoreUnavailable(
                        "this library's vectors are not in Milvus yet (its active index is "
                        f"version {other.version}, FAISS files): run `clipsearch reindex` with "
                        "CLIPSEARCH_MILVUS_URI set to build the Milvus collection from the catalog "
                        "(no image is embedded again)"
                    )
            model_id = catalog.ensure_model(self.Session, model)
            version = milvus_store.ensure_first_version(
                self.config.store, self.Session, model_id, int(model.embed_dim)
            )
            with self._session() as session:
                row = session.scalar(sa.select(IndexVersion).where(IndexVersion.version == version))
                assert row is not None
                row_info = (row.version, row.model_id, dict(row.params or {}), row.path)
        version, model_id, params, _path = row_info
        store = milvus_store.open_version(self.config.store, params, int(model.embed_dim))
        return _Served(
            model, model_id, spec, store, version, 0, mark=milvus_store.mark_name(version)
        )

    def _load_index_files(self, version: int, params: dict[str, Any]) -> FaissStore | None:
        """The saved index of catalog version ``version``, or None (logged) if its files are gone."""
        folder = index_dir(self.data_dir)
        try:
            store = FaissStore.load(folder, int(params.get("store_version") or 0) or None)
        except IndexerError as exc:
            log.warning(
                "index version %s cannot be loaded (%s); serving exact search from the catalog's "
                "vectors until `clipsearch reindex` rebuilds it",
                version,
                exc,
            )
            self._index_damage = f"the files of index version {version} cannot be loaded"
            return None
        extra = store.metadata.get("extra") or {}
        if extra.get("catalog_version") != version:
            log.warning(
                "the index files in %s belong to another version (%s, not %s); serving exact "
                "search from the catalog's vectors until `clipsearch reindex` rebuilds it",
                folder,
                extra.get("catalog_version"),
                version,
            )
            self._index_damage = (
                f"the index files belong to another version ({extra.get('catalog_version')}, "
                f"not {version})"
            )
            return None
        self._index_damage = None
        return store

    def _sync_delta(self, served: _Served) -> int:
        """Apply what the catalog changed since the store's watermark to the store: new and
        re-embedded images upserted (FAISS: into the exact delta), deleted or no longer ready ones
        out. Reads only the changed rows (an index range on the change sequence). With Milvus the
        watermark is kept in the catalog per collection, so whichever process follows the catalog
        repairs writes a crashed worker missed. Returns the rows read."""
        with served.lock, self._session() as session:
            if served.mark is not None:
                lease = _lease_name(served.mark)
                if not hold_lease(session, lease, self._lease_owner, self._lease_ttl_s):
                    # another process follows the catalog into this collection: one writer
                    served.watermark = catalog.get_mark(session, served.mark) or 0
                    return 0
                served.watermark = catalog.get_mark(session, served.mark) or 0
            result = follow_catalog(served.store, session, served.model_id, served.watermark)
            read = result.rows_read
            if result.reload:
                # deletions newer than our watermark were forgotten
                if served.mark is None:
                    log.warning("index refresh fell too far behind the catalog; reloading it")
                    served.store = FaissStore.empty(served.store.dim)
                else:
                    log.warning(
                        "the Milvus collection fell too far behind the catalog to learn every "
                        "deletion; upserting every vector again (deleted images are never shown, "
                        "and `clipsearch reindex` rebuilds the collection exactly)"
                    )
                result = follow_catalog(served.store, session, served.model_id, 0)
                read += result.rows_read
            served.watermark = result.watermark
            if served.mark is not None:
                catalog.advance_mark(session, served.mark, result.watermark)
                session.commit()
            return read

    def refresh_index(self) -> int:
        """Pick up a newer active index version (hot swap) and what the catalog changed since the
        build (new vectors, deletions). Returns the catalog rows the refresh read."""
        served = self._served
        if served is None:
            self._ensure_served()
            return 0
        with self._refresh_lock:
            self._follower.refreshed()
            with self._session() as session:
                row = active_index_row(session)
                version = None if row is None else row.version
                if row is not None and _is_milvus(row.params) != self._milvus:
                    version = served.catalog_version  # another store's version: not ours to load
            if version != served.catalog_version:
                new = self._load_served(reuse=served)
                self._served = new  # the swap: one reference assignment
                log.info(
                    "now serving index version %s (model %s, %s store)",
                    new.catalog_version,
                    new.spec,
                    new.store.kind,
                )
                return 0
            return self._sync_delta(served)

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
        found = self._search(vector, k, offset, min_score, filters, exclude, rows=True)
        return found  # type: ignore[return-value]

    def search_scores(
        self, vector: np.ndarray, k: int = 20, filters: SearchFilters | None = None
    ) -> list[tuple[int, float]]:
        """(id, cosine) of the ``k`` best ready images for ``vector``, best first: what
        :meth:`search` finds, without reading the rows a page would show (a hybrid query ranks
        100 or more of them and shows 20)."""
        found = self._search(vector, k, 0, None, filters, None, rows=False)
        return found  # type: ignore[return-value]

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        offset: int,
        min_score: float | None,
        filters: SearchFilters | None,
        exclude: Sequence[int] | None,
        rows: bool,
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
        while True:
            scores, ids = store.search(
                q, fetch, filters=store_filters, exclude=exclude, allow=allow
            )
            valid = ids >= 0
            ids_l = [int(i) for i in ids[valid]]
            scores_l = [float(s) for s in scores[valid]]
            # The catalog has the last word (state and filters by primary key): an id the store
            # still holds after a delete it missed is never shown.
            found = self._hit_rows(ids_l, filters) if rows else self._ready_ids(ids_l, filters)
            hits: list[Any] = []
            below = False
            for image_id, score in zip(ids_l, scores_l, strict=True):
                if min_score is not None and score < min_score:
                    below = True
                    break
                if image_id not in found:
                    continue
                if rows:
                    hits.append(catalog.hit_from_row(found[image_id], score))  # type: ignore[index]
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
        keywords: tuple[int, list[Any]] | None = None,
        relevance: Any = None,
        min_relevance: float | None = None,
    ) -> list[Hit]:
        """A text query through the vectors and/or the keyword index (``mode`` semantic, text,
        hybrid; None: hybrid when the keyword index has content); see :mod:`indexer.hybrid`.
        ``keywords``: what :meth:`keyword_hits` gave for this query, filters and depth;
        ``relevance``: the calibrated relevance of cosines; ``min_relevance``: the cut on the
        relevance each hit shows (indexer.search_service)."""
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
        )

    def keyword_hits(
        self, query: str, k: int = 20, offset: int = 0, filters: SearchFilters | None = None
    ) -> tuple[int, list[Any]]:
        """(depth, hits): the keyword side of a hybrid or text query for a page, read on its
        own (no vector needed), to hand to :meth:`search_text` as ``keywords``."""
        from .hybrid import keyword_depth, keyword_hits

        depth = keyword_depth(k, offset)
        return depth, keyword_hits(self._sources(), query, depth, filters)

    def _sources(self) -> Any:
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

    def image_text(self, image_id: int) -> dict[str, Any]:
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

    def calibration(self) -> Any:
        """The relevance calibration of the served index (:mod:`indexer.relevance`): measured
        with the background queries on first use, again when the library's size has changed by
        a quarter (checked at most once a minute) or after an hour, or with a new index."""
        from .relevance import BackgroundCache

        served = self._ensure_served()
        served = self._served or served
        if self._relevance is None:
            self._relevance = BackgroundCache()
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

        return self._relevance.get(id(served), served.model, best, size)

    def _store_filters(self, filters: SearchFilters) -> StoreFilters:
        folder = None
        if filters.folder:
            text = str(filters.folder)
            if "\x00" in text:
                raise IndexerError("the folder filter contains a NUL character")
            folder = catalog.path_to_db(os.path.abspath(os.path.expanduser(text)))
        return StoreFilters(
            folder=folder,
            date_from=_naive(filters.date_from) if filters.date_from is not None else None,
            date_to=_naive(filters.date_to) if filters.date_to is not None else None,
            formats=tuple(_formats(filters.formats or ())),
        )

    def _hit_rows(self, ids: list[int], filters: SearchFilters | None) -> dict[int, Any]:
        """The ready rows of these ids that pass the filters, by id: only the columns a hit
        shows (plain rows, not ORM objects: a search reads up to hundreds per query)."""
        if not ids:
            return {}
        stmt = sa.select(*catalog.HIT_COLUMNS).where(catalog.ID_IN, Image.state == "ready")
        if filters is not None:
            stmt = stmt.where(*self._filter_conditions(filters))
        with self._session() as session:
            return {row.id: row for row in session.execute(stmt, {"ids": ids})}

    def _ready_ids(self, ids: list[int], filters: SearchFilters | None) -> set[int]:
        """Which of these ids are ready images that pass the filters (by primary key)."""
        if not ids:
            return set()
        stmt = sa.select(Image.id).where(catalog.ID_IN, Image.state == "ready")
        if filters is not None:
            stmt = stmt.where(*self._filter_conditions(filters))
        with self._session() as session:
            return {int(i) for i in session.scalars(stmt, {"ids": ids})}

    def _filter_conditions(self, filters: SearchFilters) -> list[Any]:
        conds: list[Any] = []
        if filters.folder:
            folder = str(filters.folder)
            if "\x00" in folder:
                raise IndexerError("the folder filter contains a NUL character")
            resolved = os.path.abspath(os.path.expanduser(folder))
            conds.append(catalog.under_folder(Image.folder, catalog.path_to_db(resolved)))
        if filters.date_from is not None:
            conds.append(Image.taken_at >= _naive(filters.date_from))
        if filters.date_to is not None:
            conds.append(Image.taken_at <= _naive(filters.date_to))
        if filters.formats:
            formats = _formats(filters.formats)
            if formats:
                conds.append(Image.format.in_(formats))
        return conds

    # ---- images

    def get_image(self, image_id: int) -> ImageInfo:
        with self._session() as session:
            return catalog.image_info(catalog.get_image(session, _as_id(image_id)))

    def list_images(
        self,
        offset: int = 0,
        limit: int = 50,
        state: str | None = None,
        after: int | None = None,
    ) -> tuple[list[ImageInfo], int]:
        """A page of images in id order and the total (of ``state``, or all).

        Page with ``after`` (the last id of the previous page): a range read on the primary key
        (or ``ix_images_state_id``) whatever the depth. ``offset`` still works but skips rows one
        by one. The total comes from the trigger-kept counts, not from counting the library."""
        limit, offset = check_page(limit, offset, MAX_LIST)
        if state is not None and state not in IMAGE_STATES:
            raise IndexerError(
                f"unknown image state {state!r}: use one of {', '.join(IMAGE_STATES)}"
            )
        if after is None:
            after = 0
        if isinstance(after, bool) or not isinstance(after, (int, np.integer)) or after < 0:
            raise IndexerError(f"after must be a non-negative image id, got {after!r}")
        # a keyset bound even on page one: a range read on the key, never a scan
        where = [Image.id > min(int(after), _MAX_ROW_ID)]
        if state is not None:
            where.append(Image.state == state)
        with self._session() as session:
            counts = catalog.state_counts(session)
            total = counts.get(state, 0) if state is not None else sum(counts.values())
            rows = session.scalars(
                sa.select(Image).where(*where).order_by(Image.id).offset(offset).limit(limit)
            ).all()
            return [catalog.image_info(r) for r in rows], int(total)

    def browse_images(
        self,
        limit: int = 50,
        state: str | None = None,
        filters: SearchFilters | None = None,
        sort: str = "id",
        after: int | None = None,
        after_key: str | None = None,
    ) -> tuple[list[ImageInfo], int, int | None, str | None]:
        """A page of images with the searches' filters, in id or capture-date order
        (:mod:`indexer.browse`): (items, total of ``state`` or all, ignoring the filters,
        next_after for the id order, next_after_key for the date orders)."""
        from .browse import browse

        limit, _ = check_page(limit, 0, MAX_LIST)
        if state is not None and state not in IMAGE_STATES:
            raise IndexerError(
                f"unknown image state {state!r}: use one of {', '.join(IMAGE_STATES)}"
            )
        if after is not None and (isinstance(after, bool) or after < 0):
            raise IndexerError(f"after must be a non-negative image id, got {after!r}")
        conditions = self._filter_conditions(filters) if filters is not None else []
        with self._session() as session:
            counts = catalog.state_counts(session)
            total = counts.get(state, 0) if state is not None else sum(counts.values())
            rows, next_after, next_key = browse(
                session,
                limit=limit,
                state=state,
                conditions=conditions,
                sort=sort,
                after=None if after is None else min(int(after), _MAX_ROW_ID),
                after_key=after_key,
            )
            return [catalog.image_info(r) for r in rows], int(total), next_after, next_key

    def image_vector(self, image_id: int) -> np.ndarray:
        """The served model's vector of one image (for "more like this"); NotFound if none."""
        served = self._ensure_served()
        image_id = _as_id(image_id)
        with self._session() as session:
            row = catalog.get_image(session, image_id)
            if row.state != "ready":
                raise NotFound(f"image {image_id} is {row.state}, not embedded yet")
            return catalog.image_vector(session, image_id, served.model_id)

    def thumbnail_path(self, image_id: int) -> Path:
        """The thumbnail file of an image, by catalog id only (never a path from the caller),
        checked as :meth:`open_thumbnail` checks it."""
        with self.open_thumbnail(image_id) as opened:
            return Path(opened.real_path)

    def open_thumbnail(self, image_id: int) -> safe_files.OpenedFile:
        """The thumbnail, opened inside the thumbnails folder with no symbolic link followed,
        and a JPEG (what the decoder writes). Raises NotFound."""
        image_id = _as_id(image_id)
        with self._session() as session:
            key = catalog.get_image(session, image_id).thumbnail
        return self._open_thumbnail_key(key, f"image {image_id}")

    def _open_thumbnail_key(self, key: str | None, what: str) -> safe_files.OpenedFile:
        parts = (key or "").split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") and "\\" not in p for p in parts):
            raise NotFound(f"{what} has no thumbnail (it may not be processed yet)")
        try:
            opened = safe_files.open_confined(
                self.thumbnails_dir / parts[0] / parts[1], [self.thumbnails_dir], "thumbnail"
            )
        except safe_files.UnsafeFile as exc:
            raise NotFound(f"{what}: {exc}") from None
        if safe_files.media_type(opened, "JPEG") is None:
            opened.close()
            raise NotFound(f"the thumbnail of {what} is damaged; ingest its folder again")
        return opened

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    def file_path(self, image_id: int) -> Path:
        """The original file of an image, by catalog id only, checked as :meth:`open_file`."""
        with self.open_file(image_id)[0] as opened:
            return Path(opened.real_path)

    def serving_roots(self, refresh: bool = False) -> list[str]:
        """The folders whose files may be served: the allowed roots, and every folder an ingest
        was recorded for (the API's are inside the roots; the CLI's were named by a local user).
        Cached; ``refresh`` re-reads the jobs (at most once a second)."""
        now = time.monotonic()
        cached = self._ingest_roots
        if cached is None or now - cached[0] > 30.0 or (refresh and now - cached[0] > 1.0):
            with self._session() as session:
                params = session.scalars(sa.select(Job.params).where(Job.kind == "ingest")).all()
            folders = {
                catalog.path_from_db(p["path"])
                for p in params
                if isinstance(p, dict) and isinstance(p.get("path"), str) and p["path"]
            }
            cached = self._ingest_roots = (now, sorted(safe_files.resolve_roots(folders)))
        roots = [str(r) for r in self._roots or []]
        return roots + [r for r in cached[1] if r not in roots]

    def open_file(self, image_id: int) -> tuple[safe_files.OpenedFile, str | None]:
        """The original file, opened for serving, and its media type (None: not a recognised
        image, serve it only as a download).

        Served only if, now, its path resolves to a regular file inside :meth:`serving_roots`,
        opened with no symbolic link followed, that still matches the catalog (size and mtime,
        else the sha256). Otherwise NotFound, and the image is marked for re-scan: its catalog
        mtime is cleared, so the next ingest of its folder decodes the file again (and nothing
        is served until then)."""
        image_id = _as_id(image_id)
        with self._session() as session:
            row = catalog.get_image(session, image_id)
            path = catalog.path_from_db(row.path)
            size, mtime_ns, sha, state, fmt = (
                row.size,
                row.mtime_ns,
                row.sha256,
                row.state,
                row.format,
            )
        try:
            try:
                opened = safe_files.open_confined(path, self.serving_roots())
            except safe_files.UnsafeFile as exc:
                if not exc.outside:
                    raise
                opened = safe_files.open_confined(path, self.serving_roots(refresh=True))
            if not safe_files.matches_catalog(opened, size, mtime_ns, sha):
                opened.close()
                raise safe_files.UnsafeFile(
                    "the file changed on disk since it was scanned; it is not served until its "
                    "folder is ingested again",
                    rescan=True,
                )
        except safe_files.UnsafeFile as exc:
            if exc.rescan:
                self._mark_for_rescan(image_id, mtime_ns)
            raise NotFound(f"image {image_id}: {exc}") from None
        media = safe_files.media_type(opened, fmt) if state == "ready" else None
        return opened, media

    def _mark_for_rescan(self, image_id: int, mtime_ns: int | None) -> None:
        """Clear the image's catalog mtime: the next scan of its folder sees it as changed."""
        if mtime_ns == RESCAN_MTIME:
            return
        try:
            with self._session() as session:
                session.execute(
                    sa.update(Image).where(Image.id == image_id).values(mtime_ns=RESCAN_MTIME)
                )
                session.commit()
        except Exception as exc:  # serving still refuses the file; the mark is an optimisation
            log.warning("could not mark image %s for re-scan: %s", image_id, exc)
        log.warning("image %s no longer matches the catalog on disk: marked for re-scan", image_id)

    def delete_image(self, image_id: int, from_disk: bool = False) -> RemovedInfo:
        """Remove an image from the library: out of the catalog and every vector store, and
        remembered (:class:`~indexer.catalog.RemovedImage`) so that no later scan adds the file
        again, at this path or any other with the same content, until :meth:`restore`.

        The file on disk is left alone unless ``from_disk``: then it is moved (never unlinked)
        into ``<data_dir>/trash/<removed id>/``, and only if it still is the file catalogued."""
        image_id = _as_id(image_id)
        opened = None
        if from_disk:
            try:
                opened, _media = self.open_file(image_id)
            except NotFound as exc:
                raise Conflict(
                    f"{exc}; the file was not moved to the trash (remove it from the library "
                    "without from_disk, or ingest its folder again first)"
                ) from None
            opened.close()
        moved: tuple[str, str] | None = None
        try:
            with self._session() as session:
                row = catalog.get_image(session, image_id)
                removed = catalog.record_removal(session, row)
                if from_disk:
                    source = catalog.path_from_db(row.path)
                    target = self.trash_dir / str(removed.id) / os.path.basename(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _move(source, str(target))
                    moved = (source, str(target))
                    removed.trash_path = catalog.path_to_db(target)
                keys = catalog.delete_images(session, [image_id])
                session.commit()
                info = catalog.removed_info(removed)
        except BaseException:
            if moved is not None:  # the catalog did not record it: put the file back
                with contextlib.suppress(OSError):
                    _move(moved[1], moved[0])
            raise
        catalog.remove_thumbnails(self.thumbnails_dir, keys)
        served = self._served
        if served is not None:
            with served.lock:
                served.store.delete([image_id])
        log.info(
            "image %s removed from the library%s",
            image_id,
            " and moved to the trash" if moved else "",
        )
        return info

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / "trash"

    def list_removed(self, limit: int = 50, before: int | None = None) -> list[RemovedInfo]:
        """Removed images, the most recently removed first; page with ``before`` (the last id of
        the previous page): a range read on the key."""
        limit, _ = check_page(limit, 0, MAX_LIST)
        if before is None:
            before = _MAX_ROW_ID
        if isinstance(before, bool) or not isinstance(before, (int, np.integer)) or before < 1:
            raise IndexerError(f"before must be a positive id, got {before!r}")
        stmt = (
            sa.select(catalog.RemovedImage)
            .where(catalog.RemovedImage.id < min(int(before), _MAX_ROW_ID))
            .order_by(catalog.RemovedImage.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [catalog.removed_info(r) for r in session.scalars(stmt)]

    def get_removed(self, removed_id: int) -> RemovedInfo:
        with self._session() as session:
            return catalog.removed_info(catalog.get_removed(session, _as_id(removed_id, "removed")))

    def restore_image(self, image_id: int) -> RestoreResult:
        """:meth:`restore` by the id the image had before it was removed."""
        with self._session() as session:
            removed_id = catalog.removed_for_image(session, _as_id(image_id)).id
        return self.restore(removed_id)

    def restore(self, removed_id: int) -> RestoreResult:
        """Bring a removed image back: every removal of the same content is forgotten (a copy
        would otherwise keep it out), files in the trash go back to their folders, and an ingest
        of each folder adds them again (with new ids; a kept embedding is not computed again)."""
        removed_id = _as_id(removed_id, "removed")
        moved_back: list[tuple[str, str]] = []
        with self._session() as session:
            first = catalog.get_removed(session, removed_id)
            rows = [first]
            if first.sha256:
                rows = list(
                    session.scalars(
                        sa.select(catalog.RemovedImage).where(
                            catalog.RemovedImage.sha256 == first.sha256
                        )
                    )
                )
            folders = sorted({catalog.path_from_db(r.folder) for r in rows})
            for folder in folders:  # refuse before changing anything (outside the roots, gone)
                self.check_ingest_path(folder)
            infos = [catalog.removed_info(r) for r in rows]
            try:
                for r in rows:
                    if r.trash_path:
                        source = catalog.path_from_db(r.trash_path)
                        target = catalog.path_from_db(r.path)
                        if os.path.lexists(target):
                            raise Conflict(
                                f"cannot restore {target}: another file is there now; move it "
                                "away first"
                            )
                        _move(source, target)
                        moved_back.append((target, source))
                    session.delete(r)
                session.commit()
            except BaseException:
                for target, source in moved_back:
                    with contextlib.suppress(OSError):
                        _move(target, source)
                raise
        for info in infos:
            if info.trash_path:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(catalog.path_from_db(info.trash_path)))
        jobs = [self.submit_ingest(folder, recursive=False) for folder in folders]
        log.info("restored %d removed image(s) of removal %s", len(infos), removed_id)
        return RestoreResult(restored=infos, jobs=jobs)

    def open_removed_thumbnail(self, removed_id: int) -> safe_files.OpenedFile:
        """The thumbnail a removed image had (kept for the Removed view). Raises NotFound."""
        with self._session() as session:
            key = catalog.get_removed(session, _as_id(removed_id, "removed")).thumbnail
        return self._open_thumbnail_key(key, f"removed image {removed_id}")

    # ---- watched folders

    def add_watched_folder(
        self, path: str, recursive: bool = True, if_changed: bool = False
    ) -> FolderInfo:
        """Keep a folder up to date: remembered in the catalog (across restarts), watched by
        the serving process's watcher, re-scanned periodically; an ingest is queued now. Adding
        a folder already watched queues a re-scan of it (``if_changed``: only if it differs
        from the catalog, as ``serve --images`` does at each start)."""
        folder = self.check_ingest_path(path)
        db_path = catalog.path_to_db(folder)
        with self._session() as session:
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
        with self._session() as session:
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
        with self._session() as session:
            row = session.get(catalog.WatchedFolder, _as_id(folder_id, "folder"))
            if row is None:
                raise NotFound(f"folder {folder_id} is not watched")
            root, recursive = catalog.path_from_db(row.path), row.recursive
        target = sub_path or root
        db_target = catalog.path_to_db(os.path.abspath(target))
        with self._session() as session:  # queued jobs: an index read on the job state
            for params in session.scalars(
                sa.select(Job.params).where(Job.state == "queued", Job.kind == "ingest")
            ):
                if isinstance(params, dict) and params.get("path") == db_target:
                    return None
        job = None
        if if_changed:
            from .watch import folder_changes

            why = folder_changes(self.Session, target, recursive or target != root, self._roots)
            log.info("watched folder %s: %s", target, why or "unchanged, no ingest queued")
        if not if_changed or why is not None:
            job = self.submit_ingest(target, recursive=recursive or target != root)
        with self._session() as session:
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
        with self._session() as session:
            row = session.get(catalog.WatchedFolder, _as_id(folder_id, "folder"))
            if row is None:
                raise NotFound(f"folder {folder_id} is not watched")
            return self._folder_info(session, row)

    def list_watched_folders(self) -> list[FolderInfo]:
        """The watched folders, in the order they were added, with their state."""
        with self._session() as session:
            rows = session.scalars(
                sa.select(catalog.WatchedFolder).order_by(catalog.WatchedFolder.id).limit(MAX_LIST)
            ).all()
            return [self._folder_info(session, r) for r in rows]

    def _folder_info(self, session: Any, row: catalog.WatchedFolder) -> FolderInfo:
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

    # ---- jobs

    def _send(self, task: str, job_id: int) -> None:
        try:
            self.celery.send_task(
                task,
                args=[job_id],
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:
            # The job is recorded: the next worker that starts re-enqueues it from the catalog.
            log.error(
                "job %s is recorded but could not be sent to the broker %s (%s); it runs when a "
                "worker starts",
                job_id,
                _masked(self.config.broker_url) or "(embedded)",
                exc,
            )
            raise QueueUnavailable(
                f"job {job_id} is recorded, but the job queue did not take it "
                f"({type(exc).__name__}): it runs when a worker starts (a starting worker re-sends "
                "unfinished jobs) or once the queue answers and the job is submitted again; check "
                "the broker (CLIPSEARCH_BROKER_URL) and the free space of the data folder"
            ) from None

    def _record_job(self, kind: str, params: dict[str, Any]) -> JobInfo:
        with self._session() as session:
            job = catalog.create_job(session, kind, params)
            return catalog.job_info(job)

    def check_ingest_path(self, path: str | os.PathLike[str]) -> Path:
        """The folder an ingest may read: existing, a directory, inside ``allowed_roots``."""
        if not isinstance(path, (str, os.PathLike)):
            raise IngestError(f"the ingest path must be a string, got {type(path).__name__}")
        text = os.fspath(path)
        if not text or "\x00" in text or len(text) > 4096:
            raise IngestError("the ingest path is empty, too long or contains a NUL character")
        folder = Path(os.path.abspath(os.path.expanduser(text)))
        resolved = folder.resolve()
        if self._roots is not None and not any(
            resolved == root or root in resolved.parents for root in self._roots
        ):
            allowed = ", ".join(str(r) for r in self._roots) or "(none)"
            raise PathNotAllowed(
                f"{folder} is outside the folders this installation may read ({allowed}); "
                "add it with --allowed-root / CLIPSEARCH_ALLOWED_ROOTS"
            )
        if not resolved.exists():
            raise IngestError(f"{folder}: no such folder")
        if not resolved.is_dir():
            raise IngestError(f"{folder} is not a folder; give the folder that holds the images")
        if not os.access(resolved, os.R_OK | os.X_OK):
            raise IngestError(f"{folder} is not readable by this user")
        return resolved

    def submit_ingest(self, path: str, recursive: bool = True) -> JobInfo:
        """Record an ingest job for a folder and queue it. Returns the queued job."""
        folder = self.check_ingest_path(path)
        # paths in the catalog are text (catalog.path_to_db): a non-UTF-8 name stays storable
        params: dict[str, Any] = {"path": catalog.path_to_db(folder), "recursive": bool(recursive)}
        if self._roots is not None:  # the worker confines the scan to the same roots
            params["allowed_roots"] = [catalog.path_to_db(r) for r in self._roots]
        job = self._record_job("ingest", params)
        self._send(TASK_INGEST, job.id)
        return job

    def submit_reindex(self, model_spec: str | None = None) -> JobInfo:
        """Record a re-index job (optionally switching to ``model_spec``) and queue it."""
        params: dict[str, Any] = {}
        if model_spec is not None:
            if not isinstance(model_spec, str) or "\x00" in model_spec or len(model_spec) > 4096:
                raise IndexerError("the model must be a model name or a folder path")
            spec = normalise_spec(model_spec)
            if not Path(spec).exists() and spec not in _registry_names():
                raise IndexerError(
                    f"{model_spec}: neither a model folder nor a known model name; give the folder "
                    "`clipsearch finetune --out` wrote, or a name from the model registry"
                )
            params["model"] = spec
        job = self._record_job("reindex", params)
        self._send(TASK_REINDEX, job.id)
        return job

    def get_job(self, job_id: int) -> JobInfo:
        with self._session() as session:
            return catalog.job_info(catalog.get_job(session, _as_id(job_id, "job")))

    def list_jobs(self, limit: int = 50, before: int | None = None) -> list[JobInfo]:
        """The newest jobs first; page with ``before`` (the last id of the previous page)."""
        limit, _ = check_page(limit, 0, MAX_LIST)
        if before is None:
            before = _MAX_ROW_ID
        if isinstance(before, bool) or not isinstance(before, (int, np.integer)) or before < 1:
            raise IndexerError(f"before must be a positive job id, got {before!r}")
        bound = min(int(before), _MAX_ROW_ID)  # a keyset bound: a range read, even on page one
        stmt = sa.select(Job).where(Job.id < bound).order_by(Job.id.desc()).limit(limit)
        with self._session() as session:
            rows = session.scalars(stmt).all()
            return [catalog.job_info(r) for r in rows]

    def wait_for_job(
        self,
        job_id: int,
        timeout: float | None = None,
        on_progress: Callable[[JobInfo], None] | None = None,
        poll_s: float = 0.5,
    ) -> JobInfo:
        """See :func:`wait_for_job`."""
        return wait_for_job(self, job_id, timeout, on_progress, poll_s)

    # ---- status

    def stats(self) -> dict[str, Any]:
        """Counts by state, the served index, unfinished jobs. Cheap: loads no model."""
        with self._session() as session:
            counts = catalog.state_counts(session)
            jobs = dict(
                session.execute(
                    sa.select(Job.state, sa.func.count())
                    .where(Job.state.in_(("queued", "running")))
                    .group_by(Job.state)
                ).all()
            )
            row = active_index_row(session)
            model_name = _spec_of_active(session)
            row_info = None if row is None else (row.version, row.kind, row.size)
        images = {state: int(counts.get(state, 0)) for state in IMAGE_STATES}
        images["total"] = sum(images.values())
        served = self._served
        if served is not None:
            index: dict[str, Any] = {"version": served.catalog_version, "model": served.spec}
            try:
                index.update(served.store.stats())
            except StoreUnavailable as exc:
                index.update(store=served.store.kind, error=str(exc))
            if "entities" in index:
                # catalog vectors vs store entities: a store that lost vectors (a Milvus
                # collection emptied by hand) shows here; `clipsearch reindex` repairs it
                index["catalog_vectors"] = images["ready"]
                index["missing"] = max(0, images["ready"] - int(index["entities"]))
            if self._index_damage is not None:  # served exactly from the catalog meanwhile
                index["damaged"] = self._index_damage
        elif row_info is not None:
            index = {
                "version": row_info[0],
                "kind": row_info[1],
                "size": row_info[2],
                "delta": 0,
                "model": model_name,
            }
        else:
            index = {"version": None, "kind": None, "size": 0, "delta": 0, "model": None}
        return {
            "images": images,
            "index": index,
            "model": served.spec if served is not None else (model_name or self.config.model_spec),
            "jobs": {"queued": int(jobs.get("queued", 0)), "running": int(jobs.get("running", 0))},
        }

    # ---- watching

    def start_watcher(self, rescan_interval_s: float = 3600.0, debounce_s: float = 2.0) -> Any:
        """Watch the catalog's watched folders in this process (stopped by :meth:`close`)."""
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

    # ---- workers

    def start_embedded_worker(self, **overrides: Any) -> Any:
        """Start a worker child process on this library's broker (stopped by :meth:`close`, and
        on Linux when this process dies). Returns its :class:`~indexer.worker.WorkerProcess`."""
        from .worker import start_worker_process

        worker = start_worker_process(self.config.worker_config(**overrides), die_with_parent=True)
        self._workers.append(worker)
        log.info("embedded worker started (pid %d, log %s)", worker.pid, worker.log_path)
        return worker


# --------------------------------------------------------------------------------------------
# helpers


def _move(source: str, target: str) -> None:
    """Move a file (a rename; across file systems a copy, then the source removed). Refuses to
    replace an existing target."""
    if os.path.lexists(target):
        raise Conflict(f"{target} exists already; nothing was moved")
    try:
        os.rename(source, target)
    except OSError as exc:
        import errno
        import shutil

        if exc.errno != errno.EXDEV:
            raise IndexerError(f"could not move {source} to {target}: {exc.strerror}") from None
        shutil.move(source, target)


def _registry_names() -> set[str]:
    try:
        from clipsearch.model import registry
    except ImportError:  # pragma: no cover - the registry ships with the model package
        return set()
    return set(getattr(registry, "MODELS", {}))


def _spec_of_active(session: Any) -> str | None:
    """The library's model (the active index's, else the one that embedded it)."""
    return library_model_spec(session)


def _formats(values: Any) -> list[str]:
    formats = [str(f).upper().strip() for f in values if str(f).strip()]
    return ["JPEG" if f == "JPG" else f for f in formats]


def _lease_name(mark: str) -> str:
    """The catalog mark of the lease on writing repairs into the collection of ``mark``."""
    return f"lease_{mark}"


def _is_milvus(params: Any) -> bool:
    return isinstance(params, dict) and params.get("store") == "milvus"


def _newest_faiss_row(session: Any) -> IndexVersion | None:
    """The newest FAISS version (what an embedded library serves while Milvus is active)."""
    for row in session.scalars(
        sa.select(IndexVersion).order_by(IndexVersion.version.desc()).limit(20)
    ):
        if not _is_milvus(row.params):
            return row  # type: ignore[no-any-return]
    return None


def _spec_of_row(session: Any, row: IndexVersion) -> str | None:
    return session.scalar(sa.select(ModelRecord.name).where(ModelRecord.id == row.model_id))


def _naive(value: Any) -> Any:
    """taken_at is camera wall-clock time (naive): compare with the caller's wall-clock value."""
    return value.replace(tzinfo=None) if getattr(value, "tzinfo", None) is not None else value


def _as_id(value: Any, what: str = "image") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NotFound(f"{what} id {value!r} is not an integer")
    if value < 1 or value > 2**63 - 1:
        raise NotFound(f"{what} {value} does not exist")
    return int(value)


if TYPE_CHECKING:  # the service's view of a library (indexer.facade) is this class's
    from .facade import LibraryFacade

    _library_is_a_facade: type[LibraryFacade] = Library
