"""Is a library ready to serve? One cheap check per part a server needs (``/api/health/ready``).

Each check makes one small round trip (or none) and raises :class:`NotReady` with a message a user
can act on; messages name the part and the setting, never a path or a URL, because readiness
probes are open to all. The caller bounds how long it waits for each (service.routes.probes): a
check itself may block as long as its driver does.

- ``catalog``: the catalog database answers ``SELECT 1``.
- ``broker``: the Celery broker accepts a connection and answers one read of the job queue.
- ``index``: the served index is not damaged, and its vector store answers (Milvus: one round
  trip; FAISS: in memory). An index not loaded yet is no failure: the first search loads it.
- ``data``: a small file can be written to, and removed from, the data folder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from .errors import IndexerError

if TYPE_CHECKING:
    from pathlib import Path

    from celery import Celery

    from .serving import IndexService


class ReadinessTarget(Protocol):
    """What the checks read of a library (indexer.library.Library is one; this module must not
    import it: the library sits above the indexer's modules)."""

    @property
    def engine(self) -> sa.Engine: ...
    @property
    def celery(self) -> Celery: ...
    @property
    def index(self) -> IndexService: ...
    @property
    def data_dir(self) -> Path: ...


log = logging.getLogger(__name__)

__all__ = ["PARTS", "NotReady", "readiness_checks"]

#: The parts checked, in the order they are reported.
PARTS = ("catalog", "broker", "index", "data")


class NotReady(IndexerError):
    """A part this library needs does not answer (the message says which and what to do)."""


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def check_catalog(library: ReadinessTarget) -> None:
    try:
        with library.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        log.debug("readiness: the catalog does not answer", exc_info=True)
        raise NotReady(
            f"the catalog database does not answer ({_kind(exc)}): check that it runs and "
            "CLIPSEARCH_DATABASE_URL; the server log has the cause"
        ) from exc


def check_broker(library: ReadinessTarget) -> None:
    celery = library.celery
    try:
        with celery.connection_for_write() as conn:
            # AMQP: the handshake; Redis: its channel pings the server on creation
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=1.5)
            channel = conn.default_channel
            size = getattr(channel, "_size", None)  # kombu's virtual transports (Redis, SQL)
            if size is not None:
                size(celery.conf.task_default_queue)  # one read of the queue
    except Exception as exc:
        log.debug("readiness: the broker does not answer", exc_info=True)
        raise NotReady(
            f"the job queue's broker does not answer ({_kind(exc)}): check that it runs and "
            "CLIPSEARCH_BROKER_URL; ingests and re-indexes cannot be queued meanwhile"
        ) from exc


def check_index(library: ReadinessTarget) -> None:
    service = library.index
    if getattr(service, "index_damage", None):
        raise NotReady(
            "the index files cannot be loaded (damaged or missing): searches run exactly from "
            "the catalog's vectors meanwhile; `clipsearch reindex` rebuilds them without "
            "embedding again"
        )
    served = getattr(service, "served", None)
    if served is None:
        return  # not loaded yet: the first search loads it
    try:
        served.store.stats()
    except Exception as exc:
        log.debug("readiness: the vector store does not answer", exc_info=True)
        raise NotReady(
            f"the vector store does not answer ({_kind(exc)}): check CLIPSEARCH_MILVUS_URI and "
            "that the store runs; searches get 503 meanwhile"
        ) from exc


def check_data(library: ReadinessTarget) -> None:
    folder = library.data_dir
    # one name per process and host: API replicas sharing the folder (each pid 7 in its own
    # container, say) never remove each other's probe, and a crash leaves one file, not many
    probe = os.path.join(folder, f".ready-{socket.gethostname()}-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ready\n")  # a full disk fails here, not at the open
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
    except OSError as exc:
        raise NotReady(
            f"the data folder (CLIPSEARCH_DATA_DIR) cannot be written "
            f"({exc.strerror or _kind(exc)}): thumbnails, index files and uploads need it; free "
            "space there or fix its permissions"
        ) from exc


def readiness_checks(library: ReadinessTarget) -> dict[str, Callable[[], None]]:
    """The check of each part in :data:`PARTS` for ``library`` (each raises NotReady)."""
    checks: dict[str, Callable[[Any], None]] = {
        "catalog": check_catalog,
        "broker": check_broker,
        "index": check_index,
        "data": check_data,
    }
    return {part: functools.partial(fn, library) for part, fn in checks.items()}
