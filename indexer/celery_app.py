"""The Celery application: one factory, configured by arguments, never at import time.

Two brokers are supported with the same tasks:

- Redis (``redis://host:6379/0``) when deployed next to PostgreSQL, with several workers.
- The embedded default, which needs no other service: kombu's SQLAlchemy transport on a SQLite
  file in the data directory (``sqla+sqlite:///<data_dir>/broker.sqlite``). Messages live in that
  file, so queued work survives a restart of ``clipsearch serve``.

Whatever the broker, the catalog is the source of truth for jobs: a worker that starts re-enqueues
the unfinished jobs it finds there (see :mod:`indexer.worker`), so a broker that loses its queue,
or a message that dies with a SIGKILLed worker, loses no work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from celery import Celery
from kombu.entity import Queue as _KombuQueue

from .configs import BATCH_TIME_LIMIT_S
from .errors import CatalogUnavailable, IndexerError, StoreUnavailable
from .logs import install_task_request_ids

log = logging.getLogger(__name__)

#: Task names, shared by the senders (Library) and the worker (tasks.py).
TASK_INGEST = "clipsearch.ingest_folder"
TASK_EMBED = "clipsearch.embed_batch"
TASK_REINDEX = "clipsearch.reindex"
TASK_RESUME = "clipsearch.resume_job"
TASK_OCR = "clipsearch.ocr_images"
TASK_DUPLICATES = "clipsearch.find_duplicates"
TASK_TAGS = "clipsearch.tag_images"
TASK_ALBUMS = "clipsearch.refresh_albums"

#: Index builds and library-wide scans go to their own queue, so a worker consuming only the
#: embedding queue (``clipsearch worker --queues embed``) keeps ingesting while a long build runs
#: elsewhere. A worker started without --queues consumes both.
BUILD_TASKS = (TASK_REINDEX, TASK_DUPLICATES, TASK_TAGS, TASK_ALBUMS)

#: What every clipsearch task shares: acknowledged after it ran (work must not be lost), and
#: retried with exponential backoff and full jitter while the catalog or the vector store is down
#: (2, 4, 8 ... s, at most 5 min apart, each a random share of that, so workers waiting on a
#: recovering database do not all come back at once); after the last retry the job stays
#: unfinished in the catalog and the next worker start resumes it.
RETRY_BACKOFF_S = 2
RETRY_BACKOFF_MAX_S = 300
RETRIES = 60
#: kombu is untyped: its Queue, called through a typed name.
Queue: Callable[..., Any] = _KombuQueue
_Task = TypeVar("_Task", bound=Callable[..., Any])


def task(app: Celery, name: str) -> Callable[[_Task], _Task]:
    """``@app.task(name=name, **TASK_OPTIONS)``, bound, with the function's own type kept
    (Celery is untyped): the one way clipsearch registers a task."""
    return cast(Callable[[_Task], _Task], app.task(name=name, **TASK_OPTIONS))


TASK_OPTIONS: dict[str, object] = {
    "bind": True,
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (CatalogUnavailable, StoreUnavailable),
    "retry_backoff": RETRY_BACKOFF_S,
    "retry_backoff_max": RETRY_BACKOFF_MAX_S,
    "retry_jitter": True,
    "max_retries": RETRIES,
}

#: Per-task time limits, (soft, hard) seconds, by task name; a task not named has
#: :data:`DEFAULT_TIME_LIMITS`. Past the soft limit the task gets SoftTimeLimitExceeded (its job
#: fails with a message saying so); past the hard limit its worker process ends, and the job is
#: resumed from the catalog by the next worker. Celery's threads and solo pools, which
#: ``clipsearch worker`` runs (indexer.worker), ignore Celery's own limits: indexer.time_limits
#: enforces these there. They are also Celery's task annotations, for a prefork pool.
#: ``CLIPSEARCH_BATCH_TIME_LIMIT_S`` sets the embedding batch's soft limit (hard: twice it,
#: at most 5 minutes more).
HOUR = 3600.0


def batch_time_limits(soft_s: float) -> tuple[float, float]:
    """The embedding batch's (soft, hard) limits for ``CLIPSEARCH_BATCH_TIME_LIMIT_S``."""
    return soft_s, soft_s + min(soft_s, 300.0)


TIME_LIMITS: dict[str, tuple[float, float]] = {
    TASK_EMBED: batch_time_limits(BATCH_TIME_LIMIT_S),  # one batch decoded, embedded, committed
    TASK_INGEST: (3 * HOUR, 3 * HOUR + 300),  # a folder scanned and planned (a million files)
    TASK_RESUME: (HOUR, HOUR + 300),
    TASK_OCR: (24 * HOUR, 24 * HOUR + 600),  # the whole library's text, one image at a time
    TASK_REINDEX: (24 * HOUR, 24 * HOUR + 600),  # every image embedded again, index built
    TASK_DUPLICATES: (6 * HOUR, 6 * HOUR + 300),
    TASK_TAGS: (6 * HOUR, 6 * HOUR + 300),
}
DEFAULT_TIME_LIMITS = (6 * HOUR, 6 * HOUR + 300)


_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")


def queue_name(queue_prefix: str = "") -> str:
    """The queue of ingestion and embedding tasks, namespaced by ``queue_prefix``."""
    return f"{queue_prefix}clipsearch"


def build_queue_name(queue_prefix: str = "") -> str:
    """The queue of index builds and library-wide scans (:data:`BUILD_TASKS`)."""
    return f"{queue_prefix}clipsearch.builds"


#: ``--queues`` names a worker may be given, and the queue each stands for.
QUEUE_KINDS = {"embed": queue_name, "builds": build_queue_name}


def is_embedded_broker(broker_url: str) -> bool:
    return broker_url.startswith(("sqla+", "sqlalchemy+"))


def make_celery(
    broker_url: str,
    result_backend: str | None = None,
    queue_prefix: str = "",
) -> Celery:
    """Build the Celery app for ``broker_url``.

    ``queue_prefix`` namespaces the queue (and, on Redis, every key) so that several libraries, or
    parallel test runs, can share one broker. Results are not stored unless ``result_backend`` is
    given: job progress lives in the catalog, not in Celery's result store.
    """
    if not broker_url or not isinstance(broker_url, str):
        raise IndexerError(
            "broker URL is empty: set CLIPSEARCH_BROKER_URL or leave it unset for the embedded broker"
        )
    if not _PREFIX_RE.match(queue_prefix):
        raise IndexerError(
            f"queue prefix {queue_prefix!r} is not allowed: use up to 64 letters, digits, '_', '.', ':' or '-'"
        )
    if broker_url.startswith("sqla+sqlite:///"):
        db_path = Path(broker_url[len("sqla+sqlite:///") :])
        db_path.parent.mkdir(parents=True, exist_ok=True)

    # the request id of the API call that sends a task travels with it (indexer.logs)
    install_task_request_ids()
    app = Celery("clipsearch", broker=broker_url, backend=result_backend, set_as_current=False)
    queue = queue_name(queue_prefix)
    transport_options: dict[str, object] = {}
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        # Unacked messages come back after this long if their worker vanished; recovery on
        # worker start usually resumes the job far sooner (see indexer.worker).
        transport_options = {"visibility_timeout": 3600}
        if queue_prefix:
            transport_options["global_keyprefix"] = queue_prefix
    elif is_embedded_broker(broker_url):
        # kombu hands these to sqlalchemy.create_engine: wait for SQLite's write lock rather than
        # failing a submission while the worker holds it.
        transport_options = {"connect_args": {"timeout": 30}}

    builds = build_queue_name(queue_prefix)
    app.conf.update(
        task_queues=(Queue(queue, routing_key=queue), Queue(builds, routing_key=builds)),
        task_routes={name: {"queue": builds, "routing_key": builds} for name in BUILD_TASKS},
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Work that must not be lost: acknowledge after the task ran, and hand the message back
        # when the worker process dies under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=result_backend is None,
        task_track_started=False,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # task events for `celery events`, Flower and celery-exporter
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_enable_remote_control=not is_embedded_broker(broker_url),
        # honoured by a prefork pool; clipsearch's threads/solo workers enforce the same
        # limits themselves (indexer.time_limits)
        task_annotations={
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in TIME_LIMITS.items()
        },
        enable_utc=True,
        timezone="UTC",
    )
    return app
