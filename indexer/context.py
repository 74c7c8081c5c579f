"""A worker process's state, shared by the task functions (indexer.tasks) and the worker that
runs them (indexer.worker): configuration, catalog sessions, the decoder pool and the model cache.

It sits below both, so imports go one way: catalog <- vector_store <- milvus_store <- context <-
tasks <- worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import IndexerError

log = logging.getLogger(__name__)

__all__ = ["WorkerContext", "normalise_spec"]


def normalise_spec(spec: str) -> str:
    """A model spec as recorded: existing folders and files by absolute path, names unchanged."""
    spec = str(spec).strip()
    if not spec:
        raise IndexerError("empty model spec: give a model name or a model folder")
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    return spec


class WorkerContext:
    """Per-process state of a worker: config, catalog sessions, and the model cache."""

    def __init__(self, config: Any) -> None:  # an indexer.worker.WorkerConfig
        from . import catalog

        self.config = config
        self.data_dir = Path(config.data_dir).expanduser().resolve()
        self.engine = catalog.make_engine(config.resolved_database_url)
        self.Session = catalog.session_factory(self.engine)
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool: Any = None

    def decode_pool(self) -> Any:
        """The process's decoder pool (started on first use, sized by ``decode_workers``)."""
        with self._lock:
            if self._pool is None:
                from .decode import DecodePool

                self._pool = DecodePool(self.config.decode_workers)
            return self._pool

    def model(self, spec: str | None = None) -> Any:
        """The CLIP model for ``spec`` (default: the configured one), loaded once per process."""
        spec = normalise_spec(spec or self.config.model_spec)
        with self._lock:
            cached = self._models.get(spec)
            if cached is None:
                import model as clip_model

                log.info("loading model %s on %s", spec, self.config.device or "auto")
                cached = clip_model.load(spec, device=self.config.device)
                # Keep at most two (the active one and a re-index target).
                while len(self._models) >= 2:
                    self._models.pop(next(iter(self._models)))
                self._models[spec] = cached
            return cached

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        with self.Session() as session:
            yield session

    def dispose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.engine.dispose()
