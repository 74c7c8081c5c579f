"""Jobs: what a library asks its workers to do, and how that is going.

``submit_*`` records the Job row first, then sends the task: if the broker loses the message,
the next worker to start re-enqueues the job from the catalog. :class:`EmbeddedWorkers` are the
worker processes a library starts itself (``clipsearch serve``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import sqlalchemy as sa

from . import catalog
from .catalog import Job
from .celery_app import TASK_INGEST, TASK_REINDEX, make_celery
from .context import MAX_LIST, MAX_ROW_ID, CatalogContext, as_id, normalise_spec
from .errors import IndexerError, IngestError, PathNotAllowed, QueueUnavailable
from .jobs import FINAL_STATES
from .types import JobInfo, check_page

log = logging.getLogger(__name__)

__all__ = ["EmbeddedWorkers", "JobService", "wait_for_job"]


class _JobReader(Protocol):
    def get_job(self, job_id: int) -> JobInfo: ...


def wait_for_job(
    jobs: _JobReader,
    job_id: int,
    timeout: float | None = None,
    on_progress: Callable[[JobInfo], None] | None = None,
    poll_s: float = 0.5,
) -> JobInfo:
    """Poll a job until it is done, failed or cancelled; ``on_progress`` sees every change.

    ``jobs``: a :class:`JobService` or a Library. Raises :class:`IndexerError` when ``timeout``
    seconds pass first (the job keeps running).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    while True:
        job = jobs.get_job(job_id)
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


class JobService:
    """Submitting jobs to a library's broker and reading their state from the catalog."""

    def __init__(
        self,
        ctx: CatalogContext,
        broker_url: str,
        queue_prefix: str = "",
        shown_broker: str | None = None,  # the broker as configured (None: the embedded one)
    ) -> None:
        self.ctx = ctx
        self.broker_url = broker_url
        self.queue_prefix = queue_prefix
        self._shown_broker = shown_broker
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.broker_url, queue_prefix=self.queue_prefix)
        return self._celery

    def close(self) -> None:
        if self._celery is not None:
            with contextlib.suppress(Exception):
                self._celery.close()

    # ---- submitting

    def send(self, task: str, job_id: int) -> None:
        """Send a recorded job's task to the broker; a failure raises QueueUnavailable (the job
        stays recorded: a starting worker re-sends it)."""
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
                _masked(self._shown_broker) or "(embedded)",
                exc,
            )
            raise QueueUnavailable(
                f"job {job_id} is recorded, but the job queue did not take it "
                f"({type(exc).__name__}): it runs when a worker starts (a starting worker re-sends "
                "unfinished jobs) or once the queue answers and the job is submitted again; check "
                "the broker (CLIPSEARCH_BROKER_URL) and the free space of the data folder"
            ) from None

    def record(self, kind: str, params: dict[str, object]) -> JobInfo:
        """Record a queued job of ``kind`` in the catalog."""
        with self.ctx.session() as session:
            job = catalog.create_job(session, kind, params)
            return catalog.job_info(job)

    def check_ingest_path(self, path: str | os.PathLike[str]) -> Path:
        """The folder an ingest may read: existing, a directory, inside the context's roots."""
        if not isinstance(path, (str, os.PathLike)):
            raise IngestError(f"the ingest path must be a string, got {type(path).__name__}")
        text = os.fspath(path)
        if not text or "\x00" in text or len(text) > 4096:
            raise IngestError("the ingest path is empty, too long or contains a NUL character")
        folder = Path(os.path.abspath(os.path.expanduser(text)))
        try:
            resolved = folder.resolve()
        except OSError:  # a link in it vanished while it was resolved (swapped meanwhile)
            raise IngestError(
                f"{folder} changed while it was being resolved (a link swapped meanwhile); "
                "try again"
            ) from None
        roots = self.ctx.roots
        if roots is not None and not any(
            resolved == root or root in resolved.parents for root in roots
        ):
            allowed = ", ".join(str(r) for r in roots) or "(none)"
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
        if self.ctx.roots is not None:  # the worker confines the scan to the same roots
            params["allowed_roots"] = [catalog.path_to_db(r) for r in self.ctx.roots]
        job = self.record("ingest", params)
        self.send(TASK_INGEST, job.id)
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
        job = self.record("reindex", params)
        self.send(TASK_REINDEX, job.id)
        return job

    # ---- reading

    def get_job(self, job_id: int) -> JobInfo:
        with self.ctx.session() as session:
            return catalog.job_info(catalog.get_job(session, as_id(job_id, "job")))

    def list_jobs(self, limit: int = 50, before: int | None = None) -> list[JobInfo]:
        """The newest jobs first; page with ``before`` (the last id of the previous page)."""
        limit, _ = check_page(limit, 0, MAX_LIST)
        if before is None:
            before = MAX_ROW_ID
        if isinstance(before, bool) or not isinstance(before, (int, np.integer)) or before < 1:
            raise IndexerError(f"before must be a positive job id, got {before!r}")
        bound = min(int(before), MAX_ROW_ID)  # a keyset bound: a range read, even on page one
        stmt = sa.select(Job).where(Job.id < bound).order_by(Job.id.desc()).limit(limit)
        with self.ctx.session() as session:
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


class EmbeddedWorkers:
    """The worker child processes a library started on its own broker (``clipsearch serve``)."""

    def __init__(self) -> None:
        self._workers: list[WorkerProcess] = []

    def start(self, worker_config: WorkerConfig) -> WorkerProcess:
        """Start a worker for ``worker_config`` (an :class:`~indexer.worker.WorkerConfig`),
        stopped by :meth:`stop_all`, and on Linux when this process dies. Returns its
        :class:`~indexer.worker.WorkerProcess`."""
        from .worker import start_worker_process

        worker = start_worker_process(worker_config, die_with_parent=True)
        self._workers.append(worker)
        log.info("embedded worker started (pid %d, log %s)", worker.pid, worker.log_path)
        return worker

    def stop_all(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.stop()
        self._workers.clear()


def _masked(url: str | None) -> str | None:
    """A broker or database URL as it may be logged: its password replaced by ``**``."""
    if not url:
        return url
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _registry_names() -> set[str]:
    try:
        from clipsearch.model import registry
    except ImportError:  # pragma: no cover - the registry ships with the model package
        return set()
    return set(getattr(registry, "MODELS", {}))


if TYPE_CHECKING:  # the service's view of it (indexer.facade) is this class's
    from celery import Celery

    from .configs import WorkerConfig
    from .facade import JobsApi
    from .worker import WorkerProcess

    _jobs_is_a_jobs_api: type[JobsApi] = JobService
