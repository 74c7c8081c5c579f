"""A job's state in the catalog, written the same way by every kind of job (ingest, embed,
reindex, OCR, duplicates): loaded (or skipped when gone or finished), marked running with a
heartbeat, errors sampled, finished when its work is accounted for, or failed with a message a
user can act on. This is the one place that writes a job's state.

Below the job modules (ingest, runs, reindex, ocr_job, duplicates), the tasks and the worker, so
each of them imports it and none imports another for these: catalog <- context <- jobs <- ingest
<- reindex <- runs <- tasks <- worker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import catalog
from .catalog import Job
from .celery_app import RETRIES
from .context import WorkerContext
from .errors import CatalogUnavailable, IndexerError, NotFound, StoreUnavailable

if TYPE_CHECKING:
    from celery import Celery, Task

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = [
    "ERROR_SAMPLE",
    "FINAL_STATES",
    "add_errors",
    "context_of",
    "fail",
    "fail_job",
    "finish",
    "finish_as_processed",
    "finish_if_complete",
    "heartbeat",
    "keep_alive",
    "load_job",
    "mark_running",
    "now",
    "record_errors",
    "thumb_dir",
    "unfinished_job_ids",
]

FINAL_STATES = ("done", "failed", "cancelled")
ERROR_SAMPLE = catalog.JOB_ERROR_SAMPLE


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def context_of(app: Celery) -> WorkerContext:
    """The :class:`WorkerContext` a worker's Celery app carries."""
    return app.clipsearch  # type: ignore[no-any-return]


def thumb_dir(ctx: WorkerContext) -> Path:
    return ctx.data_dir / "thumbnails"


def unfinished_job_ids(session: Session, older_than: dt.datetime | None = None) -> list[int]:
    """Jobs queued or running; with ``older_than``, only those without progress since then."""
    stmt = sa.select(Job.id).where(Job.state.in_(("queued", "running"))).order_by(Job.id)
    if older_than is not None:
        stmt = stmt.where(sa.func.coalesce(Job.heartbeat_at, Job.updated_at) < older_than)
    return [int(i) for i in session.scalars(stmt)]


def load_job(session: Session, job_id: int) -> Job | None:
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


def mark_running(session: Session, job: Job) -> None:
    at = now()
    if job.state != "running":
        job.state = "running"
    if job.started_at is None:
        job.started_at = at
    job.heartbeat_at = at
    session.commit()


def finish(session: Session, job: Job, state: str = "done", message: str | None = None) -> None:
    """Close a job as done, failed or cancelled (a job already closed is left as it is). Commits."""
    if state not in FINAL_STATES:
        raise IndexerError(f"a job can only finish as done, failed or cancelled, not {state!r}")
    if job.state in FINAL_STATES:
        return
    at = now()
    job.state = state
    job.finished_at = at
    job.heartbeat_at = at
    if message:
        job.message = message[:2000]
    session.commit()


def finish_if_complete(session: Session, job_id: int) -> bool:
    """Inside the caller's transaction: mark a running job done once every image it planned is
    accounted for (``done + failed >= total``). One conditional UPDATE, so of two batches ending
    together exactly one finishes it. True when this call finished it."""
    res = session.execute(
        sa.update(Job)
        .where(
            Job.id == job_id,
            Job.state == "running",
            Job.total.is_not(None),
            Job.done + Job.failed >= Job.total,
        )
        .values(state="done", finished_at=catalog.utcnow())
    )
    assert isinstance(res, sa.CursorResult)  # an UPDATE's result (typed as a plain Result)
    return bool(res.rowcount)


def finish_as_processed(session: Session, job_id: int, *where: sa.ColumnElement[bool]) -> bool:
    """Inside the caller's transaction: mark a job done with ``total = done + failed`` (what it
    processed itself) when the SQL conditions ``where`` hold for its row. True when this call
    finished it."""
    at = catalog.utcnow()
    res = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, *where)
        .values(
            state="done",
            total=Job.done + Job.failed,
            finished_at=at,
            heartbeat_at=at,
            updated_at=at,
        )
    )
    assert isinstance(res, sa.CursorResult)  # an UPDATE's result (typed as a plain Result)
    return bool(res.rowcount)


def heartbeat(session: Session, job_id: int) -> None:
    """Mark the job alive now (an UPDATE in the caller's transaction; the caller commits)."""
    session.execute(sa.update(Job).where(Job.id == job_id).values(heartbeat_at=now()))


def add_errors(job: Job, errors: Sequence[dict[str, str]]) -> None:
    """Keep the first ERROR_SAMPLE errors of a job."""
    if not errors:
        return
    current = list(job.errors or [])
    room = ERROR_SAMPLE - len(current)
    if room > 0:
        job.errors = current + list(errors)[:room]


def record_errors(session: Session, job_id: int, errors: Sequence[dict[str, str]]) -> None:
    """:func:`add_errors` for a job known by id, inside the caller's transaction: the row is read
    afresh (call it after an UPDATE has locked it, so concurrent batches never lose a sample)."""
    if not errors:
        return
    job = session.get(Job, job_id, populate_existing=True)
    if job is not None:
        add_errors(job, errors)


def fail(session: Session, job_id: int, message: str, *, path: str | None = None) -> None:
    """Record that a job failed as a whole with ``message``, a sentence a user can act on; with
    ``path`` (the folder an ingest could not read) the failure is also one of its errors. A job
    already finished is left as it is. Commits."""
    job = session.get(Job, job_id)
    if job is None or job.state in FINAL_STATES:
        return
    if path is not None:
        add_errors(job, [{"path": path, "reason": message[:500]}])
    finish(session, job, "failed", message)


def fail_job(ctx: WorkerContext, job_id: int, exc: BaseException) -> None:
    """Record that a job's task failed with ``exc`` (the task wrappers' last resort)."""
    with ctx.session() as session:
        fail(session, job_id, f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def keep_alive(ctx: WorkerContext, job_id: int | None, every_s: float = 20.0) -> Iterator[None]:
    """Refresh the job's heartbeat from a side thread while a long step runs."""
    if job_id is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                with ctx.session() as session:
                    session.execute(
                        sa.update(Job).where(Job.id == job_id).values(heartbeat_at=now())
                    )
                    session.commit()
            except Exception as exc:  # a missed beat only risks a duplicate (idempotent) run
                log.warning("job %s: heartbeat failed: %s", job_id, exc)

    thread = threading.Thread(target=beat, name=f"clipsearch-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def run_guarded(app: Celery, task: Task, job_id: int, fn: Callable[[], T]) -> T | None:
    """Run a task's work for ``job_id`` the way every clipsearch task does: a catalog or vector
    store that is down is raised for Celery to retry (celery_app.TASK_OPTIONS); any other error
    fails the job with its message."""
    try:
        return fn()
    except (CatalogUnavailable, StoreUnavailable) as exc:
        # Nothing can be recorded while the catalog is down: Celery retries the task later
        # (TASK_OPTIONS: backoff with jitter). If retries run out, the job stays unfinished
        # in the catalog and the next worker start resumes it.
        log.warning("job %s: %s; retry %d of %d", job_id, exc, task.request.retries + 1, RETRIES)
        raise
    except Exception as exc:
        # A failure a user must act on (folder gone, model missing, a bug): the job fails
        # with it instead of staying "running" for ever.
        if isinstance(exc, IndexerError):
            log.error("job %s failed: %s", job_id, exc)
        else:
            log.exception("job %s failed unexpectedly", job_id)
        fail_job(context_of(app), job_id, exc)
        return None
