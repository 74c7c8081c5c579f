"""A job's state in the catalog, written the same way by every kind of job (ingest, embed,
reindex, delete, OCR, duplicates): loaded (or skipped when gone or finished), marked running with
a heartbeat, errors sampled, finished or failed with a message a user can act on.

Below the job modules (tasks, ocr_job, duplicates) and the worker, so each of them imports it and
none imports another for these: catalog <- context <- jobs <- tasks <- worker.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from . import catalog
from .catalog import Job
from .context import WorkerContext
from .errors import NotFound

log = logging.getLogger(__name__)

__all__ = [
    "ERROR_SAMPLE",
    "FINAL_STATES",
    "add_errors",
    "context_of",
    "fail_job",
    "finish",
    "load_job",
    "mark_running",
    "now",
    "thumb_dir",
    "unfinished_job_ids",
]

FINAL_STATES = ("done", "failed", "cancelled")
ERROR_SAMPLE = catalog.JOB_ERROR_SAMPLE


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def context_of(app: Any) -> WorkerContext:
    """The :class:`WorkerContext` a worker's Celery app carries."""
    return app.clipsearch  # type: ignore[no-any-return]


def thumb_dir(ctx: WorkerContext) -> Any:
    return ctx.data_dir / "thumbnails"


def unfinished_job_ids(session: Any, older_than: dt.datetime | None = None) -> list[int]:
    """Jobs queued or running; with ``older_than``, only those without progress since then."""
    stmt = sa.select(Job.id).where(Job.state.in_(("queued", "running"))).order_by(Job.id)
    if older_than is not None:
        stmt = stmt.where(sa.func.coalesce(Job.heartbeat_at, Job.updated_at) < older_than)
    return [int(i) for i in session.scalars(stmt)]


def load_job(session: Any, job_id: int) -> Job | None:
    """The job, or None (logged) when it is gone or already finished: nothing to do then."""
    try:
        job = catalog.get_job(session, int(job_id))
    except NotFound:
        log.warning("job %s is not in the catalog; dropping its task", job_id)
        return None
    if job.state in FINAL_STATES:
        log.info("job %s is already %s; nothing to do", job_id, job.state)
        return None
    return job


def mark_running(session: Any, job: Job) -> None:
    at = now()
    if job.state != "running":
        job.state = "running"
    if job.started_at is None:
        job.started_at = at
    job.heartbeat_at = at
    session.commit()


def finish(session: Any, job: Job, state: str = "done", message: str | None = None) -> None:
    at = now()
    job.state = state
    job.finished_at = at
    job.heartbeat_at = at
    if message:
        job.message = message[:2000]
    session.commit()


def add_errors(job: Job, errors: Sequence[dict[str, str]]) -> None:
    """Keep the first ERROR_SAMPLE errors of a job."""
    if not errors:
        return
    current = list(job.errors or [])
    room = ERROR_SAMPLE - len(current)
    if room > 0:
        job.errors = current + list(errors)[:room]


def fail_job(ctx: WorkerContext, job_id: int, exc: BaseException) -> None:
    """Record that a job failed as a whole, with a message a user can act on."""
    with ctx.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.state in FINAL_STATES:
            return
        finish(session, job, "failed", f"{type(exc).__name__}: {exc}")
