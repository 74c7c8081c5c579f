"""The shared contexts: :class:`CatalogContext`, what a library's services (indexer.serving,
images, removals, folders, job_queue, stats) share, and :class:`WorkerContext`, a worker
process's state shared by the job functions (indexer.runs, indexer.reindex) and the worker that
runs them (indexer.worker): configuration, catalog sessions, the decoder pool and the model
cache; and which model and index folder a library uses.

It sits below them, so imports go one way: catalog <- vector_store <- context <- jobs <- ingest
<- reindex <- runs <- tasks <- worker, and context <- serving <- images <- removals <- library.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import catalog
from .catalog import Embedding, ModelRecord
from .configs import WorkerConfig
from .errors import IndexerError, NotFound
from .vector_store import active_index_row

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

    from .decode_pool import DecodePool

log = logging.getLogger(__name__)

__all__ = [
    "MAX_LIST",
    "MAX_ROW_ID",
    "CatalogContext",
    "WorkerContext",
    "active_model_spec",
    "as_id",
    "index_dir",
    "library_model_spec",
    "normalise_spec",
]


MAX_LIST = 1000  # the longest page a listing returns
MAX_ROW_ID = 2**31 - 1  # ids are 32-bit integers in the catalog


def as_id(value: object, what: str = "image") -> int:
    """A catalog id given by a caller, checked: NotFound unless a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NotFound(f"{what} id {value!r} is not an integer")
    if value < 1 or value > 2**63 - 1:
        raise NotFound(f"{what} {value} does not exist")
    return int(value)


class CatalogContext:
    """What a library's services share: the data folder, the catalog's engine and sessions, and
    the folders files may be read from (``roots``; None: any folder). One per Library; each
    service can also be built over one alone (tests, tools)."""

    def __init__(self, data_dir: Path, engine: Engine, roots: Sequence[Path] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.engine = engine
        self.Session: sessionmaker[Session] = catalog.session_factory(engine)
        self.roots: list[Path] | None = (
            None if roots is None else [Path(r).expanduser().resolve() for r in roots]
        )

    @classmethod
    def open(
        cls,
        data_dir: Path,
        database_url: str | None = None,
        roots: Sequence[Path] | None = None,
        migrate: bool = True,
    ) -> CatalogContext:
        """The context of the library in ``data_dir`` (created if new), its catalog migrated
        (``migrate``), or checked to be at the newest schema (SchemaNotCurrent if not)."""
        folder = Path(data_dir).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        url = database_url or catalog.default_database_url(folder)
        engine = catalog.init_db(url, migrate=migrate)
        return cls(folder, engine, roots)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session() as session:
            yield session

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / "trash"

    def dispose(self) -> None:
        self.engine.dispose()


def normalise_spec(spec: str) -> str:
    """A model spec as recorded: existing folders and files by absolute path, names unchanged."""
    spec = str(spec).strip()
    if not spec:
        raise IndexerError("empty model spec: give a model name or a model folder")
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    return spec


def library_model_spec(session: Session) -> str | None:
    """The model this library uses, as the catalog records it: the active index's model, else
    the model that embedded the oldest vector (a library ingested but never re-indexed: every
    finished re-index activates an index, so with none active, vectors of any other model come
    from a re-index still under way, which must not take over searches before its flip); None
    for a new library. Two index look-ups."""
    row = active_index_row(session)
    model_id = row.model_id if row is not None else None
    if model_id is None:
        oldest = sa.select(sa.func.min(Embedding.id)).scalar_subquery()  # the key's first entry
        model_id = session.scalar(sa.select(Embedding.model_id).where(Embedding.id == oldest))
    if model_id is None:
        return None
    name = session.scalar(sa.select(ModelRecord.name).where(ModelRecord.id == model_id))
    return str(name) if name else None


def active_model_spec(session: Session, default: str) -> str:
    """The spec of the model searches and workers use: :func:`library_model_spec`, else
    ``default`` (the configured model, for a new library)."""
    return library_model_spec(session) or default


def index_dir(ctx_or_data_dir: WorkerContext | Path | str) -> Path:
    """The folder of the FAISS index files of a library (a data folder, or a WorkerContext)."""
    if isinstance(ctx_or_data_dir, WorkerContext):
        return ctx_or_data_dir.data_dir / "index"
    return Path(ctx_or_data_dir) / "index"


class WorkerContext:
    """Per-process state of a worker: config, catalog sessions, and the model cache."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).expanduser().resolve()
        self.engine = catalog.make_engine(config.resolved_database_url)
        self.Session = catalog.session_factory(self.engine)
        self._models: dict[str, EmbeddingModel] = {}
        self._lock = threading.Lock()
        self._pool: DecodePool | None = None

    def decode_pool(self) -> DecodePool:
        """The process's decoder pool (started on first use, sized by ``decode_workers``)."""
        with self._lock:
            if self._pool is None:
                from .decode_pool import DecodePool

                self._pool = DecodePool(self.config.decode_workers)
            return self._pool

    def model(self, spec: str | None = None) -> EmbeddingModel:
        """The CLIP model for ``spec`` (default: the configured one), loaded once per process."""
        spec = normalise_spec(spec or self.config.model_spec)
        with self._lock:
            cached = self._models.get(spec)
            if cached is None:
                from clipsearch import model as clip_model

                log.info("loading model %s on %s", spec, self.config.device or "auto")
                cached = clip_model.load(
                    spec,
                    device=self.config.device,
                    allow_jit=self.config.allow_jit,  # None: the model layer's default
                    cache_dir=self.config.cache_dir,
                    offline=self.config.offline,
                )
                # Keep at most two (the active one and a re-index target).
                while len(self._models) >= 2:
                    self._models.pop(next(iter(self._models)))
                self._models[spec] = cached
            return cached

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session() as session:
            yield session

    def dispose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.engine.dispose()
